"""`python3 -m spikeport` is the same as the `spikeport` command."""
from .cli import main

main()
