"""mmrface: pose-robust blind face restoration (MMRB asymmetric codec + StyleGAN2 prior).

Importing the package is cheap: nothing from training, no detector, no weights.
"""

__version__ = "0.1.0"
