"""A shared check for every layer: config round-trip, `.keras` save/load, one training step."""

import keras
import numpy as np


def check_layer(make_layer, x, expected_shape, tmp_path, atol=1e-6):
    """Runs the checks every layer of the library must pass; returns the built layer.

    - output shape equals `expected_shape` and `compute_output_shape`;
    - `from_config(get_config())` with the same weights gives the same outputs;
    - a model holding the layer (its map average-pooled if it outputs one) survives `.keras`
      save/load with identical outputs;
    - one training step on that model gives a finite loss and changes the layer's weights (if any).
    """
    layer = make_layer()
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == tuple(expected_shape)
    assert tuple(layer.compute_output_shape(x.shape)) == tuple(expected_shape)
    assert np.isfinite(y).all()

    clone = layer.__class__.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), y, atol=atol)

    inputs = keras.Input(shape=x.shape[1:], name="image")
    features = make_layer()(inputs)
    if len(features.shape) == 4:  # a layer that maps feature maps to feature maps
        features = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(3)(features)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)), atol=atol
    )

    trained = model.layers[1]
    before = [np.array(w) for w in trained.trainable_weights]
    labels = np.arange(len(x)) % 3
    loss = model.train_on_batch(x, labels)
    assert np.isfinite(loss)
    after = [np.array(w) for w in trained.trainable_weights]
    if before:  # parameter-free layers (plain SR-SOP) have nothing to move
        assert any(not np.allclose(b, a) for b, a in zip(before, after)), "no weight of the layer moved"
    return layer
