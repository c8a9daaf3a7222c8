//! `pycds-arena`: a versioned, relocatable archive of object graphs (being written).
