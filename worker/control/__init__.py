"""Operator control (CONTRACT "Control"): cancel, pause/resume, status.

Placeholder docstring, written below.
"""
