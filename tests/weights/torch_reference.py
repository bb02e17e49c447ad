"""The authors' ImageNet ResNet-50 networks in plain PyTorch, for the conversion tests.

Module names, shapes and forward passes follow the published code (torchvision's
`resnet.py`, fast-MPN-COV's `mpncovresnet.py`, GSoP-Net's `resnet.py`, 3G-Net's
`ResNet_3G.py`, GaussianPooling's `resnet.py` / `mylayers.py`), written anew
here for inference (eval mode) only. Needs torch; import it after
`pytest.importorskip("torch")`.
"""

import torch
import torch.nn.functional as F
from torch import nn

# the torch model of each Keras (name, head): GSoP stages, Gaussian pooling, head, iterations, triangle order
REFERENCES = {
    ("resnet50-imagenet", "gap"): dict(gsop=(), gauss=False, head="gap", last_stride=2),
    ("resnet50-imagenet", "isqrt-256"): dict(gsop=(), gauss=False, head="isqrt", iterations=5, column_major=False),
    ("gsop1-resnet50", "gap"): dict(gsop=(1, 2, 3, 4), gauss=False, head="gap", last_stride=1),
    ("gsop2-resnet50", "isqrt-256"): dict(gsop=(1, 2, 3), gauss=False, head="isqrt", iterations=3, column_major=True),
    ("gauss-resnet50", "gap"): dict(gsop=(), gauss=True, head="gap", last_stride=2),
    ("resnet50-3g", "3g-256"): dict(gsop=(), gauss=False, head="3g", iterations=5, column_major=True),
}


def covariance(x):
    """(B, C, H, W) -> (B, C, C), biased, over the H * W positions."""
    x = x.flatten(2)
    x = x - x.mean(dim=2, keepdim=True)
    return x @ x.transpose(1, 2) / x.shape[2]


def newton_schulz_sqrt(a, iterations):
    eye = torch.eye(a.shape[1], dtype=a.dtype).expand_as(a)
    trace = a.diagonal(dim1=1, dim2=2).sum(dim=1).view(-1, 1, 1)
    y, z = a / trace, eye
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return y * trace.sqrt()


def upper_triangle(a, column_major):
    dim = a.shape[1]
    mask = torch.ones(dim, dim).triu()
    if column_major:
        mask = mask.t()  # the lower triangle row by row = the upper one column by column
    return a.reshape(a.shape[0], -1)[:, mask.reshape(-1).nonzero().squeeze(1)]


class GaussianPool(nn.Module):
    """iSP-Gaussian pooling at inference, padded positions left out (the authors' CUDA layer)."""

    def __init__(self, channels, kernel_size, stride, padding=0):
        super().__init__()
        self.args = (kernel_size, stride, padding)
        hidden = channels // 2
        self.ToHidden = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU()
        )
        self.ToMean = nn.Sequential(nn.Conv2d(hidden, channels, 1), nn.BatchNorm2d(channels))
        self.ToSigma = nn.Sequential(nn.Conv2d(hidden, channels, 1), nn.BatchNorm2d(channels), nn.Sigmoid())

    def forward(self, x):
        mean = F.avg_pool2d(x, *self.args, count_include_pad=False)
        square = F.avg_pool2d(x * x, *self.args, count_include_pad=False)
        std = torch.sqrt(torch.clamp(square - mean**2, min=1e-6))
        return mean + F.softplus(self.ToMean(self.ToHidden(x))) * std


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride, gsop, gauss, att_dim=128):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1 if gauss else stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            conv = nn.Conv2d(inplanes, out, 1, 1 if gauss else stride, bias=False)
            self.downsample = nn.Sequential(conv, nn.BatchNorm2d(out))
        self.gsop = gsop
        if gsop:
            self.conv_for_DR = nn.Conv2d(out, att_dim, 1, stride=2 if planes == 64 else 1, bias=True)
            self.bn_for_DR = nn.BatchNorm2d(att_dim)
            self.row_bn = nn.BatchNorm2d(att_dim)
            self.row_conv_group = nn.Conv2d(att_dim, 4 * att_dim, (att_dim, 1), groups=att_dim, bias=True)
            self.fc_adapt_channels = nn.Conv2d(4 * att_dim, out, 1, bias=True)
        self.pooling = GaussianPool(out, stride, stride) if gauss and stride > 1 else None

    def channel_attention(self, x):
        z = F.relu(self.bn_for_DR(self.conv_for_DR(F.relu(x))))
        rows = self.row_bn(covariance(z).unsqueeze(-1))  # (B, d, d, 1): the rows are BatchNorm's channels
        return torch.sigmoid(self.fc_adapt_channels(self.row_conv_group(rows)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.gsop:
            out = out * self.channel_attention(out)
        out = F.relu(out + (x if self.downsample is None else self.downsample(x)))
        return out if self.pooling is None else self.pooling(out)


class AtMp(nn.Module):
    """One unrolled re-weighting stage of 3G-Net."""

    def __init__(self, n, reduction=4):
        super().__init__()
        for name in ("1", "2", "21", "3", "4"):
            setattr(self, f"map{name}", nn.Conv2d(n, n, 1, bias=False))
            setattr(self, f"bn{name}", nn.BatchNorm2d(n))
        self.atmap1 = nn.Conv2d(n, n // reduction, 1, bias=False)
        self.bnat1 = nn.BatchNorm2d(n // reduction)
        self.atmap2 = nn.Conv2d(n // reduction, 1, 1, bias=False)
        self.atmap3 = nn.Conv2d(1, 1, 1, bias=False)

    def forward(self, x, z):
        u = F.relu(self.bn1(self.map1(x)) * self.bn2(self.map2(x)) + self.bn21(self.map21(z)))
        v = F.relu(self.bn3(self.map3(u))) * F.relu(self.bn4(self.map4(u)))
        s = self.atmap2(F.relu(self.bnat1(self.atmap1(v))))
        return torch.sigmoid(s + self.atmap3(s)) * x


class ResNet50(nn.Module):
    def __init__(
        self, gsop=(), gauss=False, head="gap", last_stride=1, iterations=5, column_major=False, num_classes=10
    ):
        super().__init__()
        self.head, self.iterations, self.column_major = head, iterations, column_major
        self.conv1 = nn.Conv2d(3, 64, 7, 1 if gauss else 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        if gauss:
            self.pool1 = GaussianPool(64, 2, 2)
            self.pool = GaussianPool(64, 3, 2, 1)
        else:
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
            stride = 1 if stage == 1 else (last_stride if stage == 4 else 2)
            layer = []
            for index in range(blocks):
                with_gsop = stage in gsop and index == blocks - 1
                layer.append(Bottleneck(inplanes, planes, stride if index == 0 else 1, with_gsop, gauss))
                inplanes = planes * 4
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
        features = 2048
        if head != "gap":
            self.layer_reduce = nn.Conv2d(2048, 256, 1, bias=False)
            self.layer_reduce_bn = nn.BatchNorm2d(256)
            features = 256 * 257 // 2
        if head == "3g":
            self.AtMp1, self.AtMp2, self.AtMp3 = AtMp(256), AtMp(256), AtMp(256)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.pool1(x)) if hasattr(self, "pool1") else self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.head == "gap":
            return self.fc(x.mean(dim=(2, 3)))
        x = F.relu(self.layer_reduce_bn(self.layer_reduce(x)))
        cov_eps = 0.0
        if self.head == "3g":
            z = x
            x = self.AtMp3(self.AtMp2(self.AtMp1(x, z), z), z)
            cov_eps = 1e-7
        cov = covariance(x) + cov_eps * torch.eye(x.shape[1], dtype=x.dtype)
        return self.fc(upper_triangle(newton_schulz_sqrt(cov, self.iterations), self.column_major))


def reference_model(name, head, num_classes=10, seed=0, size=64):
    """The authors' network of a Keras (name, head), random weights, eval mode.

    BatchNorm's running statistics are those of a random batch of `size`
    images, so that activations stay of order one through the 50 layers and
    the attention and re-weighting modules do not saturate.
    """
    torch.manual_seed(seed)
    model = ResNet50(**REFERENCES[(name, head)], num_classes=num_classes)
    randomise(model)
    calibrate(model, torch.randn(4, 3, size, size))
    return model.eval()


def calibrate(model, images):
    """Sets every BatchNorm's running statistics to those of `images` (a forward pass in training mode)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(images.to(next(model.parameters()).dtype))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def randomise(model):
    """Non-trivial BatchNorm affine parameters and running statistics (defaults would hide a swap)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1)
        for name, module in model.named_modules():
            if name.endswith("row_conv_group"):
                module.weight.mul_(10.0)  # He's fan-out scale leaves the attention near constant
            if name.endswith("atmap2"):
                module.weight.mul_(0.1)  # keeps the re-weighting's sigmoid away from 0 and 1
