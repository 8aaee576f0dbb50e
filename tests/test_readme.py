"""The README's Python example runs as written."""
import pathlib
import re


def test_readme_python_example_runs():
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
  assert blocks, "README has no python example"
  namespace = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert namespace["evals"]["test_accuracy"].shape == (8,)
  assert float(namespace["evals"]["test_accuracy"].min()) > 0.8
