"""The tooling that evaluates the library (the library never imports it): attacks that make unlearnable
examples, baseline defenses and the defense registry, the victim classifier, the embedded MNIST digits,
the benchmark (runner, results store, report, figures) and the demo."""
