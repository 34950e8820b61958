"""The networks: the paper's three (CNN, LSTM, hybrid CNN+LSTM) and the graph variant that
shares its weights across services and reads the call graph.

Every network maps x [B, T, N, C] (normalised channels; N services, back end first) to
p [B, N], the probability that each service initiates a QoS violation within the horizon.

The paper's networks have a fixed N: they see services as positions. Trained over many
topologies they are padded to `n_max` services (zeros past the real ones; the output there is
ignored), which is how one would run them across deployments, and why they cannot know which
service calls which. The graph network takes `adj` [N, N] (adj[i, j] = 1: i calls j) as a
second input and works for any N and any topology.
"""

from __future__ import annotations

import torch
from torch import nn


class PaperCNN(nn.Module):
    """Seer's CNN: convolutions over the services in topological order, per tick, on the last
    tick's window flattened in time (the paper's CNN sees a window, without recurrence)."""

    def __init__(self, t_len: int, channels: int, n_max: int, hidden: int = 32):
        super().__init__()
        self.n_max = n_max
        self.conv = nn.Sequential(
            nn.Conv1d(t_len * channels, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.out = nn.Conv1d(hidden, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        z = x.permute(0, 1, 3, 2).reshape(b, t * c, n)  # [B, T*C, N]
        return torch.sigmoid(self.out(self.conv(z)).squeeze(1))


class PaperLSTM(nn.Module):
    """Seer's LSTM: all services' channels of a tick as one vector, an LSTM over time, one
    sigmoid per service position."""

    def __init__(self, t_len: int, channels: int, n_max: int, hidden: int = 128):
        super().__init__()
        self.n_max = n_max
        self.lstm = nn.LSTM(n_max * channels, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        h, _ = self.lstm(x.reshape(b, t, n * c))
        return torch.sigmoid(self.out(h[:, -1]))


class PaperHybrid(nn.Module):
    """Seer's hybrid: a CNN over the services of each tick (dimensionality reduction), an LSTM
    over the ticks of its output, a sigmoid per service."""

    def __init__(self, t_len: int, channels: int, n_max: int, hidden: int = 64, conv: int = 16):
        super().__init__()
        self.n_max = n_max
        self.conv = nn.Sequential(
            nn.Conv1d(channels, conv, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv1d(conv, conv, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(conv * n_max, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        z = self.conv(x.reshape(b * t, n, c).permute(0, 2, 1))  # [B*T, conv, N]
        h, _ = self.lstm(z.reshape(b, t, -1))
        return torch.sigmoid(self.out(h[:, -1]))


class GraphHybrid(nn.Module):
    """The hybrid with weights shared across services: per service, a temporal CNN then an LSTM
    over its own channels; then rounds of message passing over the call graph (what its
    callees and its callers look like), then one sigmoid per service. Any N, any topology."""

    def __init__(self, t_len: int, channels: int, hidden: int = 32, rounds: int = 2):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(channels, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.mix = nn.ModuleList(nn.Linear(3 * hidden, hidden) for _ in range(rounds))
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        z = x.permute(0, 2, 3, 1).reshape(b * n, c, t)  # per service: [C, T]
        z = self.conv(z).permute(0, 2, 1)  # [B*N, T, H]
        h, _ = self.lstm(z)
        h = h[:, -1].reshape(b, n, -1)  # [B, N, H]
        # Mean over callees (adj rows) and over callers (adj columns).
        callees = adj / adj.sum(dim=1, keepdim=True).clamp(min=1.0)
        callers = adj.transpose(0, 1) / adj.sum(dim=0).unsqueeze(1).clamp(min=1.0)
        for layer in self.mix:
            down = torch.matmul(callees, h)
            up = torch.matmul(callers, h)
            h = torch.relu(layer(torch.cat([h, down, up], dim=-1))) + h
        return torch.sigmoid(self.out(h).squeeze(-1))


NETS = {"cnn": PaperCNN, "lstm": PaperLSTM, "hybrid": PaperHybrid, "graph": GraphHybrid}


def build(name: str, t_len: int, channels: int, n_max: int) -> nn.Module:
    if name == "graph":
        return GraphHybrid(t_len, channels)
    return NETS[name](t_len, channels, n_max)


def takes_graph(name: str) -> bool:
    return name == "graph"
