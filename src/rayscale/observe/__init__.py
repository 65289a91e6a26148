"""Observers: turn a live Ray cluster into what the planner needs."""
