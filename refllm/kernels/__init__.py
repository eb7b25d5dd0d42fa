"""Kernels: the ops of the forward pass.

``reference.py`` holds the readable NumPy reference and the ``Backend`` interface;
faster backends (Numba CPU, numba.cuda) provide the same functions.
"""
