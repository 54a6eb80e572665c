"""Pure maths and figures: no run-directory I/O."""
