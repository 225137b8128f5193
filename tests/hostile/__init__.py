"""Hostile inputs for the tests, crafted at test time into tmp_path (issue 21)."""
