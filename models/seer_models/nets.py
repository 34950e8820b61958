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


class GraphFactored(nn.Module):
    """The graph network with its output factored in two: p[n] = P(a violation within the
    horizon) x P(n initiates it | a violation). The first factor is one sigmoid over the whole
    application (a pooled summary of every service), trained on every violation, including the
    ones no injected fault explains (their initiator is unknown, but that a violation came is
    known); the second is a softmax over the services, trained only where the initiator is known.
    Per service: a temporal CNN and an LSTM over its channels, then message passing over the call
    graph where each service sees the mean of its callees and of its callers and their
    attention-weighted mean (a slow service is told apart from its callers by the one callee
    that explains them). Any N,
    any topology; the exported graph computes p as one tensor [batch, N]."""

    factored = True

    def __init__(self, t_len: int, channels: int, hidden: int = 32, rounds: int = 2):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(channels, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.mix = nn.ModuleList(nn.Linear(5 * hidden, hidden) for _ in range(rounds))
        self.salience = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(rounds))
        self.culprit = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.coming = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @staticmethod
    def _attend(h: torch.Tensor, score: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Per service, its neighbours (m[i, j] = 1: j is one of i's) averaged with weights
        softmax(score) over them: a learned, soft "which neighbour stands out" (a maximum would
        need a [B, N, N, H] tensor; this needs [B, N, N] scalars). h [B, N, H], score [B, N]."""
        s = score - score.max(dim=1, keepdim=True).values
        w = m.unsqueeze(0) * torch.exp(s).unsqueeze(1)  # [B, N, N]
        w = w / w.sum(dim=2, keepdim=True).clamp(min=1e-9)
        return torch.matmul(w, h)

    def parts(self, x: torch.Tensor, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(violation logit [B], culprit logits [B, N])."""
        b, t, n, c = x.shape
        z = x.permute(0, 2, 3, 1).reshape(b * n, c, t)
        z = self.conv(z).permute(0, 2, 1)
        h, _ = self.lstm(z)
        h = h[:, -1].reshape(b, n, -1)
        callees = adj / adj.sum(dim=1, keepdim=True).clamp(min=1.0)
        callers_adj = adj.transpose(0, 1)
        callers = callers_adj / callers_adj.sum(dim=1, keepdim=True).clamp(min=1.0)
        for layer, salience in zip(self.mix, self.salience):
            sc = salience(h).squeeze(-1)
            feats = [h, callees @ h, callers @ h, self._attend(h, sc, adj), self._attend(h, sc, callers_adj)]
            h = torch.relu(layer(torch.cat(feats, dim=-1))) + h
        pooled = torch.cat([h.mean(dim=1), h.max(dim=1).values], dim=-1)
        return self.coming(pooled).squeeze(-1), self.culprit(h).squeeze(-1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        v, c = self.parts(x, adj)
        return torch.sigmoid(v).unsqueeze(-1) * torch.softmax(c, dim=-1)


NETS = {"cnn": PaperCNN, "lstm": PaperLSTM, "hybrid": PaperHybrid, "graph": GraphHybrid, "graph-factored": GraphFactored}


def build(name: str, t_len: int, channels: int, n_max: int) -> nn.Module:
    if takes_graph(name):
        return NETS[name](t_len, channels)
    return NETS[name](t_len, channels, n_max)


def takes_graph(name: str) -> bool:
    return name in ("graph", "graph-factored")


def factored(name: str) -> bool:
    return name == "graph-factored"
