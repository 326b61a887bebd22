"""``python -m pace_worker ...``"""
from pace_worker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
