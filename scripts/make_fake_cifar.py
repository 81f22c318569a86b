#!/usr/bin/env python3
"""Writes a CIFAR-10-shaped data set of random images in the official binary format
(data_batch_1..5.bin, test_batch.bin, batches.meta.txt under DIR/cifar-10-batches-bin), for
timing a real epoch where the real data set cannot be downloaded (the device machine has no
network). Usage: make_fake_cifar.py DIR [TRAIN_IMAGES] [TEST_IMAGES] (default 50000, 10000)."""
import os
import random
import sys

RECORD = 1 + 3 * 32 * 32


def write(path, n, rng):
    with open(path + ".part", "wb") as f:
        for _ in range(n):
            f.write(bytes([rng.randrange(10)]) + rng.randbytes(RECORD - 1))
    os.replace(path + ".part", path)


def main():
    root = os.path.join(sys.argv[1], "cifar-10-batches-bin")
    train = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
    test = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    os.makedirs(root, exist_ok=True)
    rng = random.Random(0)
    per = train // 5
    for i in range(5):
        write(os.path.join(root, f"data_batch_{i + 1}.bin"), per if i < 4 else train - 4 * per, rng)
    write(os.path.join(root, "test_batch.bin"), test, rng)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(os.path.join(root, "batches.meta.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"{train} training and {test} test images (random) in {root}")


if __name__ == "__main__":
    main()
