"""Build script. The C++/CUDA extension of csrc/ will be added here; for now it declares the package."""

from setuptools import setup

setup()
