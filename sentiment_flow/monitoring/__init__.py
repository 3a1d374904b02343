"""Monitoring: how the data a model scores compares with what it was trained and tested on."""
