"""PyTorch replicas of the eight seed models (``resflax.models.seed``), for the benchmark only.

Layer for layer as the Flax replicas and the Keras originals (``resflax.keras_seeds``), with the
same trainable parameter counts and BatchNorm statistics (tests/test_bench.py), written the way a
PyTorch user writes them: NCHW images (the benchmark transposes its NHWC batch once), BatchNorm with
Keras' settings (``momentum=0.01`` is Keras' 0.99, ``eps=1e-3``), logits out (the softmax is in the
loss, ``nn.CrossEntropyLoss``). Initialisation is PyTorch's default: it does not change the speed.

    from benchmarks import torch_seeds
    model = torch_seeds.build('cifar10_rescnn_deep')  # takes [N, 3, 32, 32]

Where a Keras ``Dense`` acts on the channel axis of a feature map (seed 000 method 1) the replica
uses a 1x1 ``Conv2d``: the same weights and arithmetic, on NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

KERAS_BN = dict(eps=1e-3, momentum=0.01)  # Keras BatchNormalization(momentum=0.99, epsilon=1e-3)


class ResidualMLP(nn.Module):
  """Seed 002 In[2] / In[4]; ``dense_additive`` In[7]. Input ``[N, D]``."""

  def __init__(self, input_dim: int, num_outputs: int = 10, width: int = 128, num_blocks: int = 3,
               dropout_rate: float = 0.5, dense_additive: bool = False):
    super().__init__()
    self.dense_additive = dense_additive
    self.stem = nn.Sequential(nn.Linear(input_dim, width), nn.ReLU(),
                              nn.Linear(width, width), nn.ReLU())

    def body():  # 2 x (Dense -> BN -> relu -> Dropout)
      layers = []
      for _ in range(2):
        layers += [nn.Linear(width, width), nn.BatchNorm1d(width, **KERAS_BN), nn.ReLU(),
                   nn.Dropout(dropout_rate)]
      return nn.Sequential(*layers)

    self.blocks = nn.ModuleList(body() for _ in range(num_blocks))
    self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout_rate),
                              nn.Linear(width, num_outputs))

  def forward(self, x):
    outputs = [self.stem(x)]
    for block in self.blocks:
      y = block(outputs[-1])
      for earlier in (outputs if self.dense_additive else outputs[-1:]):
        y = y + earlier
      outputs.append(y)
    return self.head(outputs[-1])


class _DeepBody(nn.Module):
  """Conv-relu, BN, Conv-relu (seed 002 In[3]/In[6])."""

  def __init__(self, channels: int):
    super().__init__()
    self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
    self.norm0 = nn.BatchNorm2d(channels, **KERAS_BN)
    self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

  def forward(self, x):
    return torch.relu(self.conv1(self.norm0(torch.relu(self.conv0(x)))))


class _ShallowBody(nn.Sequential):
  """(Conv -> BN -> relu) x 2 (seed 002 In[5])."""

  def __init__(self, channels: int):
    super().__init__(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels, **KERAS_BN),
                     nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                     nn.BatchNorm2d(channels, **KERAS_BN), nn.ReLU())


class SeedResCNN(nn.Module):
  """Seed 002 In[3] / In[5] / In[6]. Input ``[N, C, H, W]``."""

  def __init__(self, in_channels: int, num_blocks: int, body: str, num_outputs: int = 10,
               dropout_rate: float = 0.5):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3),
                              nn.ReLU(), nn.MaxPool2d(3))
    body_cls = {'deep': _DeepBody, 'shallow': _ShallowBody}[body]
    self.blocks = nn.ModuleList(body_cls(64) for _ in range(num_blocks))
    self.head_conv = nn.Conv2d(64, 64, 3)
    self.head = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(dropout_rate),
                              nn.Linear(256, num_outputs))

  def forward(self, x):
    x = self.stem(x)
    for block in self.blocks:
      x = block(x) + x
    x = torch.relu(self.head_conv(x)).mean(dim=(2, 3))  # GlobalAveragePooling2D
    return self.head(x)


class SteeringNet(nn.Module):
  """Seed 000 method 1 (``'pointwise_dense'``) and 2 (``'flatten_dense'``), as in resflax.parts.

  Input ``[N, 3, 120, 160]``.
  """

  def __init__(self, shortcut: str, num_outputs: int = 1):
    super().__init__()
    self.shortcut_kind = shortcut
    self.conv1 = nn.Conv2d(3, 64, 6, stride=3)  # [N, 64, 39, 52], linear
    self.drop1 = nn.Dropout(0.2)
    if shortcut == 'pointwise_dense':
      self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
      self.branch_dense = nn.Conv2d(64, 64, 1)  # Dense(64) on the channel axis
      self.shortcut = nn.Conv2d(64, 64, 1)  # aux1 = Dense(64)(net)
      self.out = nn.Linear(39 * 52 * 64, num_outputs)
    elif shortcut == 'flatten_dense':
      self.conv2 = nn.Conv2d(64, 128, 3, stride=2, padding=1)  # [N, 128, 20, 26], as Keras 'same'
      self.branch_dense = nn.Linear(20 * 26 * 128, 64)
      self.shortcut = nn.Linear(39 * 52 * 64, 64)  # aux1 = Dense(64)(Flatten()(net))
      self.out = nn.Linear(64, num_outputs)
    else:
      raise ValueError(f"shortcut must be 'pointwise_dense' or 'flatten_dense', got {shortcut!r}")
    self.drop2 = nn.Dropout(0.2)

  def forward(self, x):
    x = self.drop1(self.conv1(x))
    branch = self.drop2(self.conv2(x))
    if self.shortcut_kind == 'flatten_dense':
      branch, x = branch.flatten(1), x.flatten(1)
    x = self.branch_dense(branch) + self.shortcut(x)
    return self.out(x.flatten(1))


BUILDERS = {
    'mnist_resmlp': lambda: ResidualMLP(784),
    'mnist_rescnn_deep': lambda: SeedResCNN(1, 19, 'deep'),
    'cifar10_resmlp': lambda: ResidualMLP(3072),
    'cifar10_rescnn_shallow': lambda: SeedResCNN(3, 2, 'shallow'),
    'cifar10_rescnn_deep': lambda: SeedResCNN(3, 19, 'deep'),
    'mnist_densesum_mlp': lambda: ResidualMLP(784, dense_additive=True),
    'steering_conv_shortcut': lambda: SteeringNet('pointwise_dense'),
    'steering_dense_shortcut': lambda: SteeringNet('flatten_dense'),
}


def build(name: str) -> nn.Module:
  """The PyTorch replica of seed model ``name`` (a ``resflax.models.MODELS`` name)."""
  try:
    return BUILDERS[name]()
  except KeyError:
    raise KeyError(f"no PyTorch seed replica named {name!r}: use one of {', '.join(BUILDERS)}") from None
