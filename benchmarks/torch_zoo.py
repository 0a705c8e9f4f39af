"""PyTorch replicas of the zoo models the benchmark times: ResNet-20/56 (option A) and DenseNet-BC-100.

As ``resflax.models.resnet_cifar`` and ``resflax.models.densenet``: bias-free convs followed by
BatchNorm (PyTorch's defaults, momentum 0.1 / eps 1e-5, are the papers'), a Dense classifier with
bias, logits out; the same parameter counts (tests/test_bench.py). NCHW input ``[N, 3, 32, 32]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class _BasicBlock(nn.Module):
  """relu(BN(conv(relu(BN(conv(x))))) + shortcut(x)), option A (zero-pad) where the shape changes."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv0, self.norm0 = _conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
    self.conv1, self.norm1 = _conv3x3(cout, cout), nn.BatchNorm2d(cout)
    self.stride, self.extra = stride, cout - cin

  def forward(self, x):
    y = self.norm1(self.conv1(torch.relu(self.norm0(self.conv0(x)))))
    if self.stride > 1 or self.extra:
      x = x[:, :, ::self.stride, ::self.stride]
      x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
    return torch.relu(y + x)


class ResNetCIFAR(nn.Module):
  """ResNet v1, depth 6n + 2 (1512.03385 sec. 4.2)."""

  def __init__(self, n: int, num_outputs: int = 10, widths=(16, 32, 64)):
    super().__init__()
    self.stem = nn.Sequential(_conv3x3(3, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU())
    blocks, cin = [], widths[0]
    for stage, width in enumerate(widths):
      for b in range(n):
        blocks.append(_BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
        cin = width
    self.blocks = nn.Sequential(*blocks)
    self.logits = nn.Linear(cin, num_outputs)

  def forward(self, x):
    return self.logits(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class _DenseLayer(nn.Module):
  """BN-relu-conv1x1(4k)-BN-relu-conv3x3(k), concatenated to its input."""

  def __init__(self, cin: int, k: int):
    super().__init__()
    self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * k, 1, bias=False),
                              nn.BatchNorm2d(4 * k), nn.ReLU(), _conv3x3(4 * k, k))

  def forward(self, x):
    return torch.cat([x, self.body(x)], 1)


class DenseNetBC(nn.Module):
  """DenseNet-BC (1608.06993): stem 2k, ``n`` bottleneck layers per block, compression 0.5."""

  def __init__(self, n: int, k: int, num_outputs: int = 10):
    super().__init__()
    layers, c = [_conv3x3(3, 2 * k)], 2 * k
    for stage in range(3):
      for _ in range(n):
        layers.append(_DenseLayer(c, k))
        c += k
      if stage < 2:
        out = math.floor(0.5 * c)
        layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, out, 1, bias=False), nn.AvgPool2d(2)]
        c = out
    layers += [nn.BatchNorm2d(c), nn.ReLU()]
    self.features = nn.Sequential(*layers)
    self.logits = nn.Linear(c, num_outputs)

  def forward(self, x):
    return self.logits(self.features(x).mean(dim=(2, 3)))


BUILDERS = {
    'resnet20': lambda: ResNetCIFAR(3),
    'resnet56': lambda: ResNetCIFAR(9),
    'densenet_bc100_k12': lambda: DenseNetBC(16, 12),
}


def build(name: str) -> nn.Module:
  try:
    return BUILDERS[name]()
  except KeyError:
    raise KeyError(f"no PyTorch zoo replica named {name!r}: use one of {', '.join(BUILDERS)}") from None
