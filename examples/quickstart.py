"""The README's example: watch a deep sigmoid MLP train, then diagnose it (runs in the tests)."""

import torch
from torch import nn

import gradprobe

torch.manual_seed(0)
x, y = torch.randn(512, 8), torch.randn(512, 1)
hidden = [m for _ in range(9) for m in (nn.Linear(64, 64), nn.Sigmoid())]
model = nn.Sequential(nn.Linear(8, 64), nn.Sigmoid(), *hidden, nn.Linear(64, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

monitor = gradprobe.watch(model, optimizer)  # the one line you add
for _ in range(20):  # your training loop, unchanged
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()

for finding in gradprobe.diagnose(monitor):
    print(f"{finding.severity} {finding.code}: {finding.summary}")
monitor.plot()[0].savefig("gradients.png")
