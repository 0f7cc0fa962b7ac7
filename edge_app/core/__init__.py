"""The shared core: typed events and the words they carry, and the policy that turns age estimates into a decision. Imports nothing above it."""
