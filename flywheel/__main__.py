"""`python -m flywheel ...`; the guard matters: vLLM starts its engine core with the spawn method."""

from flywheel.cli import main

if __name__ == "__main__":
    main()
