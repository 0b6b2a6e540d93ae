#!/usr/bin/env python3
"""SwanLab sidecar of a training task (R-TRAIN-5).

The worker starts it beside the trainer, writes the trainer's per-step metric JSON lines to its
stdin and closes stdin when training ends. It logs each step with the official `swanlab` SDK and
announces the run on stdout as one JSON line carrying the key "swanlab_sidecar":
  {"swanlab_sidecar": "started", "run_dir": DIR, "url": URL-or-null}
or {"swanlab_sidecar": "error", "message": WHY} (exit status 2) when the SDK is missing or
swanlab.init fails. Other output (the SDK's own banner) is informational.

`--read RUN_DIR` prints the scalars an offline/local run holds, {"KEY": [[step, value], ...]},
through the SDK's own record reader; the tests use it to check what was logged.

Online mode reads the API key from SWANLAB_API_KEY (never from the command line).
"""
import argparse
import glob
import json
import os
import sys


def announce(out, **fields):
    out.write(json.dumps({"swanlab_sidecar": fields.pop("kind"), **fields}) + "\n")
    out.flush()


def read_run(run_dir):
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    scalars = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "*.swanlab"))):
        reader = DataStoreReader()
        reader.open(path)
        while True:
            data = reader.scan()
            if data is None:
                break
            record = Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "scalar":
                scalar = record.scalar
                scalars.setdefault(scalar.key, []).append([scalar.step, scalar.value.number])
    print(json.dumps(scalars))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["offline", "online"], default="offline")
    parser.add_argument("--project", default="llm-workbench")
    parser.add_argument("--workspace")
    parser.add_argument("--experiment")
    parser.add_argument("--logdir", default="swanlog")
    parser.add_argument("--config", help="JSON object recorded as the run's config")
    parser.add_argument("--read", metavar="RUN_DIR")
    args = parser.parse_args()

    if args.read:
        read_run(args.read)
        return 0

    # The SDK mirrors the terminal into its run record; announcements go to a private copy of
    # stdout so the worker reads them unmixed.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    try:
        import swanlab
    except ImportError as e:
        announce(out, kind="error", message=f"the swanlab SDK is not installed ({e}); run scripts/install-swanlab.sh")
        return 2

    api_key = os.environ.get("SWANLAB_API_KEY")
    try:
        if args.mode == "online" and api_key:
            swanlab.login(api_key=api_key)
        run = swanlab.init(
            mode="online" if args.mode == "online" else "offline",
            project=args.project,
            workspace=args.workspace or None,
            name=args.experiment,
            log_dir=args.logdir,
            config=json.loads(args.config) if args.config else None,
        )
    except Exception as e:  # noqa: BLE001 - any SDK failure becomes a warning in the task log
        announce(out, kind="error", message=f"swanlab.init failed: {e}")
        return 2
    url = None
    if args.mode == "online":
        try:
            url = run.url
        except Exception:  # noqa: BLE001
            url = None
    announce(out, kind="started", run_dir=str(run.dir), url=url)

    for line in sys.stdin:
        try:
            metrics = json.loads(line)
        except ValueError:
            continue
        step = metrics.get("step")
        values = {
            f"train/{k}": v
            for k, v in metrics.items()
            if k not in ("step", "total_steps") and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if values:
            swanlab.log(values, step=step)
    swanlab.finish()
    announce(out, kind="finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
