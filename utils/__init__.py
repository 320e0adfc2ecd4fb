"""Small helpers for the entry points and engines: distributed init, schedules, optimizer groups,
checkpoint I/O, logging. Imports nothing from models/ or datasets/."""
