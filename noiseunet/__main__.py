"""``python -m noiseunet`` (and ``accelerate launch -m noiseunet``)."""

from noiseunet.cli import main

main()
