"""Render: a pure function from a plan to every file each host must hold."""
