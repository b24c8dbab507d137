"""Processes around the control plane: echo backends, Envoy launcher, traffic client."""
