"""Replay: run the engine over historical events with a simulated clock, at CPU speed."""
