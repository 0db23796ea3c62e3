"""``python -m captum_erasure.benchmark``."""

from captum_erasure.benchmark.run import main

if __name__ == "__main__":
    main()
