"""The verify checks, one module per area; ``provisioner.verify.run`` lists them in order."""
