#!/usr/bin/env python3
"""Side by side, in one run: PyTorch on the CPU (threads = cores) and gpu-lenet on a chosen
adapter train the same network (`--model lenet5`, `lenet5-bn` or `resnet20`) on the same data
(1 epoch or `--epochs N`, batch 64, lr 0.01, momentum 0.9) and
the script prints both training throughputs and their ratio. The data: Fashion-MNIST (one input
channel), or with `--dataset cifar` the CIFAR-10 network (three channels) on CIFAR-10 binary
files (`--data DIR/cifar-10-batches-bin`, e.g. made by scripts/make_fake_cifar.py).

    pip install torch numpy
    cargo build --release
    python3 benches/compare_pytorch.py [--adapter lavapipe] [--dataset fashion-mnist|cifar] [--data DIR] [--repeat N]

For ResNet-20 a smaller CIFAR-format set keeps a run short on a CPU adapter:

    python3 scripts/make_fake_cifar.py /tmp/c5k 5120 1000
    python3 benches/compare_pytorch.py --model resnet20 --dataset cifar --data /tmp/c5k/cifar-10-batches-bin --batch-size 128

Training images/s counts the training loop only (data already in memory, no evaluation).
`--weight-decay` and `--lr-schedule cosine` give both the same recipe (ResNet-20's on
Fashion-MNIST: `--model resnet20 --batch-size 128 --lr 0.1 --weight-decay 5e-4 --lr-schedule
cosine --epochs 2`, whose test accuracies docs/recipes.md compares).
`--torch-device cuda` trains PyTorch on an NVIDIA GPU instead, for a side-by-side there (with
`--adapter vulkan`; docs/performance.md has one).
"""
import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from resnet20 import ResNet20  # noqa: E402 (the fixtures' module, gpu-lenet's --model resnet20)


class Net(nn.Module):
    def __init__(self, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class NetBN(Net):
    """LeNet-5 with a BatchNorm2d after each convolution (gpu-lenet's --model lenet5-bn)."""

    def __init__(self, in_channels=1):
        super().__init__(in_channels)
        self.bn1 = nn.BatchNorm2d(6)
        self.bn2 = nn.BatchNorm2d(16)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


MODELS = {"lenet5": Net, "lenet5-bn": NetBN, "resnet20": lambda in_channels: ResNet20(in_ch=in_channels)}


def idx(path):
    for p in (path + ".gz", path):
        if os.path.exists(p):
            data = open(p, "rb").read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            return data
    sys.exit(f"{path}[.gz] not found")


def load(data_dir, prefix):
    images = np.frombuffer(idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte")), np.uint8, offset=16)
    labels = np.frombuffer(idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte")), np.uint8, offset=8)
    images = images.reshape(-1, 1, 28, 28)
    # Same input as gpu-lenet: pad 2 pixels of raw 0 to 32x32, then (u8/255 - 0.5)/0.5.
    images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    x = (torch.from_numpy(images.astype(np.float32)) / 255.0 - 0.5) / 0.5
    return x, torch.from_numpy(labels.astype(np.int64))


def load_cifar(data_dir, split):
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    raw = b"".join(open(os.path.join(data_dir, n), "rb").read() for n in names if os.path.exists(os.path.join(data_dir, n)))
    records = np.frombuffer(raw, np.uint8).reshape(-1, 1 + 3 * 32 * 32)
    x = (torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32)) / 255.0 - 0.5) / 0.5
    return x, torch.from_numpy(records[:, 0].astype(np.int64))


def load_split(dataset, data_dir, split):
    if dataset == "cifar":
        return load_cifar(data_dir, split)
    return load(data_dir, "train" if split == "train" else "t10k")


def pytorch_images_per_sec(model, dataset, data_dir, batch, lr, device, epochs=1, weight_decay=0.0, schedule="constant"):
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    x, y = load_split(dataset, data_dir, "train")
    x, y = x.to(device), y.to(device)
    net = MODELS[model](in_channels=x.shape[1]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    # gpu-lenet's --lr-schedule cosine: CosineAnnealingLR(T_max = epochs), stepped per epoch.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if schedule == "cosine" else None
    crit = nn.CrossEntropyLoss()
    if device != "cpu":
        # One step before the clock starts, so CUDA's context and kernel loading are not timed
        # (gpu-lenet's epoch likewise starts after its pipelines are built).
        crit(net(x[:batch]), y[:batch]).backward()
        opt.zero_grad()
        torch.cuda.synchronize()
    xt, yt = load_split(dataset, data_dir, "test")
    secs = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(y), device=device)
        net.train()
        start = time.perf_counter()
        for i in range(0, len(y), batch):
            idx_ = perm[i:i + batch]
            opt.zero_grad()
            loss = crit(net(x[idx_]), y[idx_])
            loss.backward()
            opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        secs += time.perf_counter() - start
        if sched is not None:
            sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xt.to(device)).argmax(1) == yt.to(device)).float().mean().item()
    return epochs * len(y) / secs, acc


def gpu_lenet_images_per_sec(binary, adapter, model, dataset, data_dir, batch, lr, epochs=1, weight_decay=0.0,
                             schedule="constant"):
    """Training images/s, test accuracy, and the adapter as the run names it (with its driver)."""
    with tempfile.TemporaryDirectory() as d:
        metrics = os.path.join(d, "m.jsonl")
        cmd = [binary, "train", "--adapter", adapter, "--model", model,
               "--dataset", "cifar10" if dataset == "cifar" else dataset, "--data", data_dir, "--no-download",
               "--epochs", str(epochs), "--batch-size", str(batch), "--lr", str(lr), "--metrics", metrics,
               "--weight-decay", str(weight_decay), "--lr-schedule", schedule]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        found = re.search(r"\) on (.*): \d+ epochs", out)
        rows = [json.loads(line) for line in open(metrics).read().splitlines()]
        # Every epoch trains the same images: the mean rate is the harmonic mean of the epochs.
        secs = sum(1 / r["images_per_sec"] for r in rows)
        return len(rows) / secs, rows[-1]["test_accuracy"], found.group(1) if found else adapter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", default="auto")
    ap.add_argument("--model", default="lenet5", choices=sorted(MODELS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar"])
    ap.add_argument("--data", default=None,
                    help="default: /usr/share/datasets/fashion-mnist, or data/cifar-10-batches-bin with --dataset cifar")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "gpu-lenet"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    ap.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"], help="where PyTorch trains: cpu (the design card's comparison) or cuda")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of both, alternating; with more than one, each round's ratio and the median (this machine swings run to run)")
    a = ap.parse_args()
    if a.data is None:
        a.data = "data/cifar-10-batches-bin" if a.dataset == "cifar" else "/usr/share/datasets/fashion-mnist"
    what = "CIFAR-10 format (3 channels)" if a.dataset == "cifar" else "Fashion-MNIST"
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{what}, {a.model}, {a.epochs} epoch(s), batch {a.batch_size}, lr {a.lr}, weight decay {a.weight_decay}, "
          f"schedule {a.lr_schedule}, data {a.data}")
    ratios = []
    for _ in range(max(1, a.repeat)):
        pt, pt_acc = pytorch_images_per_sec(a.model, a.dataset, a.data, a.batch_size, a.lr, a.torch_device, a.epochs,
                                            a.weight_decay, a.lr_schedule)
        where = f"CPU ({os.cpu_count()} threads)" if a.torch_device == "cpu" else f"{a.torch_device} ({torch.cuda.get_device_name()})"
        print(f"PyTorch {where}: {pt:8.0f} training images/s, test accuracy {100 * pt_acc:.2f}%")
        gl, gl_acc, on = gpu_lenet_images_per_sec(a.binary, a.adapter, a.model, a.dataset, a.data, a.batch_size, a.lr,
                                                  a.epochs, a.weight_decay, a.lr_schedule)
        print(f"gpu-lenet ({on}): {gl:8.0f} training images/s, test accuracy {100 * gl_acc:.2f}%")
        print(f"ratio gpu-lenet / PyTorch: {gl / pt:.2f}x", flush=True)
        ratios.append(gl / pt)
    if len(ratios) > 1:
        r = sorted(ratios)
        median = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
        print(f"{len(r)} rounds: ratios {', '.join(f'{x:.2f}' for x in ratios)}; median {median:.2f}x, lowest {r[0]:.2f}x")


if __name__ == "__main__":
    main()
