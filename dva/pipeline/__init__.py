"""Ray Data stages of the batch edit job, and the inputs and results manifest they read and write."""
