"""The Foresight execution kernel: plain Python, no Django.

Only the management commands in kernel/management/ touch Django; everything else
here must import without it (kernel/apps.py is loaded by Django alone).
"""
