//! Deciding how to build and run a release when the spec does not say.
//! (Filled in by the build-detection work of issue 3.)
