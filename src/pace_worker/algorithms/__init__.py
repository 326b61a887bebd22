"""Pure algorithms on arrays (numpy / scikit-learn): no files, no pyace but its MaxVol routine."""
