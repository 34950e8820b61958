"""The networks: the paper's three (CNN, LSTM, hybrid CNN+LSTM) and the graph variant that
shares its weights across services and reads the call graph.

Every network maps x [B, T, N, C] (normalised channels; N services, back end first) to
p [B, N], the probability that each service initiates a QoS violation within the horizon.

The paper's networks have a fixed N: they see services as positions. Trained over many
topologies they are padded to `n_max` services (zeros past the real ones; the output there is
ignored), which is how one would run them across deployments, and why they cannot know which
service calls which. The graph networks take the call graph as a second input (`adj` [N, N]
in training, `edges` [E, 2] when exported: see `Graph`) and work for any N and any topology.
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


class Graph:
    """The call graph as the graph networks use it, from either form of their second input:
    `adj` float [N, N] (adj[i, j] = 1: service i calls j; training) or `edges` int64 [E, 2]
    ((i, j) rows, each call once, no self-calls; the exported models, so that the agent's and
    the central's inference costs memory and time linear in the calls, not quadratic in N: a
    dense [5000, 5000] adjacency alone is 100 MB a tick). Both give the same results, which
    `train.export_onnx` checks against the dense form before it writes a model."""

    def __init__(self, g: torch.Tensor, n: int):
        self.n = n
        self.sparse = not torch.is_floating_point(g)
        # Each service's callee and caller counts (or the row-normalised matrices), once for
        # every round of message passing.
        if self.sparse:
            self.src, self.dst = g[:, 0], g[:, 1]
            self.out_deg = self._degree(self.src)[None, :, None]
            self.in_deg = self._degree(self.dst)[None, :, None]
        else:
            self.adj, self.adj_t = g, g.transpose(0, 1)
            self.callees = g / g.sum(dim=1, keepdim=True).clamp(min=1.0)
            self.callers = self.adj_t / self.adj_t.sum(dim=1, keepdim=True).clamp(min=1.0)

    def _gather_sum(self, to: torch.Tensor, frm: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per service i: the sum of v[:, j] over the edges with to = i and frm = j. v [B, N, K]."""
        out = torch.zeros(v.shape[0], self.n, v.shape[2], dtype=v.dtype)
        return out.index_add(1, to, v[:, frm])

    def _degree(self, to: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(to.shape[0], dtype=torch.float32)
        return torch.zeros(self.n, dtype=torch.float32).index_add(0, to, ones).clamp(min=1.0)

    def callees_mean(self, h: torch.Tensor) -> torch.Tensor:
        """Per service, the mean of its callees' h (0 for none). h [B, N, H]."""
        if self.sparse:
            return self._gather_sum(self.src, self.dst, h) / self.out_deg
        return self.callees @ h

    def callers_mean(self, h: torch.Tensor) -> torch.Tensor:
        """Per service, the mean of its callers' h (0 for none)."""
        if self.sparse:
            return self._gather_sum(self.dst, self.src, h) / self.in_deg
        return self.callers @ h

    def _attend(self, h, score, to, frm, m):
        """Per service, its neighbours averaged with weights softmax(score) over them: a
        learned, soft "which neighbour stands out" (a maximum would need a [B, N, N, H]
        tensor). h [B, N, H], score [B, N]; sparse: neighbours j of i are the edges (to = i,
        frm = j); dense: m[i, j] = 1."""
        e = torch.exp(score - score.max(dim=1, keepdim=True).values)  # [B, N]
        if self.sparse:
            num = self._gather_sum(to, frm, e.unsqueeze(-1) * h)
            den = self._gather_sum(to, frm, e.unsqueeze(-1))
            return num / den.clamp(min=1e-9)
        w = m.unsqueeze(0) * e.unsqueeze(1)  # [B, N, N]
        w = w / w.sum(dim=2, keepdim=True).clamp(min=1e-9)
        return torch.matmul(w, h)

    def attend_callees(self, h: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        if self.sparse:
            return self._attend(h, score, self.src, self.dst, None)
        return self._attend(h, score, None, None, self.adj)

    def attend_callers(self, h: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        if self.sparse:
            return self._attend(h, score, self.dst, self.src, None)
        return self._attend(h, score, None, None, self.adj_t)


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
        # Mean over callees and over callers.
        g = Graph(adj, n)
        for layer in self.mix:
            h = torch.relu(layer(torch.cat([h, g.callees_mean(h), g.callers_mean(h)], dim=-1))) + h
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

    def parts(self, x: torch.Tensor, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(violation logit [B], culprit logits [B, N])."""
        b, t, n, c = x.shape
        z = x.permute(0, 2, 3, 1).reshape(b * n, c, t)
        z = self.conv(z).permute(0, 2, 1)
        h, _ = self.lstm(z)
        h = h[:, -1].reshape(b, n, -1)
        g = Graph(adj, n)
        for layer, salience in zip(self.mix, self.salience):
            sc = salience(h).squeeze(-1)
            feats = [h, g.callees_mean(h), g.callers_mean(h), g.attend_callees(h, sc), g.attend_callers(h, sc)]
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
