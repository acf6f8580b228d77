# SPDX-License-Identifier: MIT
"""Puts tools/ on sys.path (the refengine package) and keeps torch to one thread."""

import os
import sys

import torch

TOOLS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)
torch.set_num_threads(1)
