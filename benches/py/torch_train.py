"""The PyTorch side of spacetune's training-throughput benchmark: builds the same network as
spacetune's tch lowering from the IR graph (JSON), trains it with the same optimiser on the
same batch size and thread count, and prints images per second as JSON.

  python torch_train.py GRAPH.json BATCH STEPS THREADS
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class SqueezeExcite(nn.Module):
    def __init__(self, c, mid):
        super().__init__()
        self.reduce = nn.Conv2d(c, mid, 1)
        self.expand = nn.Conv2d(mid, c, 1)

    def forward(self, x):
        g = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(g))))


class Net(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.nodes = graph["nodes"]["items"]
        self.shapes = graph["shapes"]
        self.layers = nn.ModuleDict()
        for i, n in enumerate(self.nodes):
            op, ins = n["op"], n["inputs"]
            s = self.shapes[ins[0]] if ins else None
            kind = op["op"]
            if kind == "conv":
                m = nn.Conv2d(s["c"], op["out"], op["k"], op["stride"], op["pad"],
                              op["dilation"], op["groups"], bias=False)
            elif kind == "batch_norm":
                m = nn.BatchNorm2d(s["c"])
            elif kind == "linear":
                m = nn.Linear(s["c"] * s["h"] * s["w"], op["out"])
            elif kind == "squeeze_excite":
                m = SqueezeExcite(s["c"], op["mid"])
            else:
                continue
            self.layers[str(i)] = m

    def forward(self, x):
        vals = []
        n_batch = x.shape[0]
        for i, n in enumerate(self.nodes):
            op, kind = n["op"], n["op"]["op"]
            a = [vals[j] for j in n["inputs"]]
            if kind == "input":
                y = x
            elif kind in ("conv", "batch_norm", "squeeze_excite"):
                y = self.layers[str(i)](a[0])
            elif kind == "linear":
                y = self.layers[str(i)](a[0].flatten(1)).view(n_batch, op["out"], 1, 1)
            elif kind == "relu":
                y = F.relu(a[0])
            elif kind == "relu6":
                y = torch.clamp(a[0], 0.0, 6.0)
            elif kind == "hswish":
                y = F.hardswish(a[0])
            elif kind == "sigmoid":
                y = torch.sigmoid(a[0])
            elif kind == "add":
                y = a[0]
                for t in a[1:]:
                    y = y + t
            elif kind == "concat":
                y = torch.cat(a, 1)
            elif kind == "max_pool":
                y = F.max_pool2d(a[0], op["k"], op["stride"], op["pad"])
            elif kind == "avg_pool":
                y = F.avg_pool2d(a[0], op["k"], op["stride"], op["pad"], count_include_pad=False)
            elif kind == "global_avg_pool":
                y = F.adaptive_avg_pool2d(a[0], 1)
            elif kind == "channel_shuffle":
                b, c, h, w = a[0].shape
                g = op["groups"]
                y = a[0].view(b, g, c // g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
            elif kind == "identity":
                y = a[0]
            elif kind == "zero":
                s = self.shapes[i]
                y = torch.zeros(n_batch, s["c"], s["h"], s["w"])
            else:
                raise ValueError(f"unknown op {kind}")
            vals.append(y)
        return vals[-1]


def main():
    path, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    graph = json.load(open(path))
    net = Net(graph)
    s = graph["shapes"][0]
    classes = graph["shapes"][-1]["c"]
    x = torch.rand(batch, s["c"], s["h"], s["w"])
    y = torch.randint(0, classes, (batch,))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    net.train()

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x).view(batch, classes), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t
    print(json.dumps({"images_per_second": batch * steps / seconds, "seconds": seconds,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
