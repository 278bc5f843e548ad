"""The slicewise BentoML service. Never imports torch or `training`."""
