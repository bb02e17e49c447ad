"""Keras layers of GM-SOP, each usable on its own inside any Keras model."""

from gmsop_keras.layers.gated_mixture import GatedMixture
from gmsop_keras.layers.gaussian_pooling_2d import GaussianPooling2D
from gmsop_keras.layers.generalized_gaussian_reweighting import GeneralizedGaussianReweighting
from gmsop_keras.layers.gsop_block import GSoPBlock
from gmsop_keras.layers.netvlad import NetVLAD
from gmsop_keras.layers.noisy_top_k_gate import NoisyTopKGate, balance_loss, top_k_softmax
from gmsop_keras.layers.parametric_gap import ParametricGAP
from gmsop_keras.layers.sparse_moe import SparseMoE
from gmsop_keras.layers.square_root_sop import SquareRootSOP

__all__ = ["GSoPBlock", "GatedMixture", "GaussianPooling2D", "GeneralizedGaussianReweighting", "NetVLAD", "NoisyTopKGate", "ParametricGAP", "SparseMoE", "SquareRootSOP", "balance_loss", "top_k_softmax"]
