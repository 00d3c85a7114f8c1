"""`rescue hooks`: render the shell of hooks/ for a generator, install it into a system, remove it again."""
