"""Shared launcher pieces: the train command line, shell quoting, dry runs, streamed commands.

Every launcher builds the same command,

  python -m centernet_jax.main --config FILE --workdir DIR [--config.x=y ...] [extra flags]

as a list of arguments (never a string glued together), quotes it with `shlex` only where a
shell will read it (an ssh command, an sbatch script, a dry-run print), and runs it through a
`Runner`, which either executes and streams the output (optionally into a log file) or, with
`dry_run=True`, prints the exact command and runs nothing.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import subprocess
import sys
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TRAIN_MODULE = 'centernet_jax.main'

Overrides = Mapping[str, Any] | Sequence[str] | None


class CommandError(RuntimeError):
  """A launched command exited with a non-zero status."""

  def __init__(self, returncode: int, command: str):
    super().__init__(f'command failed with exit status {returncode}: {command}')
    self.returncode = returncode
    self.command = command


# ---------------------------------------------------------------------------------------------
# Overrides and the train command.


def format_value(value: Any) -> str:
  """Formats one override value the way `ml_collections.config_flags` parses it back.

  Strings are passed verbatim (no quotes: the flag parser of a string field takes the raw
  text), floats use the shortest round-tripping repr, bools `True`/`False`, tuples and lists a
  Python tuple literal.
  """
  if isinstance(value, bool):
    return 'True' if value else 'False'
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  if value is None:
    return 'None'
  return str(value)


def override_args(overrides: Overrides) -> list[str]:
  """`{'optimizer.learning_rate': 1e-3}` -> `['--config.optimizer.learning_rate=0.001']`.

  Also accepts a sequence of strings, each `key=value`, `config.key=value` or
  `--config.key=value` (kept verbatim apart from the prefix).
  """
  if not overrides:
    return []
  if isinstance(overrides, Mapping):
    return [f'--config.{key}={format_value(value)}' for key, value in overrides.items()]
  args = []
  for item in overrides:
    item = str(item)
    if item.startswith('--config.'):
      args.append(item)
    elif item.startswith('config.'):
      args.append('--' + item)
    elif '=' in item and not item.startswith('-'):
      args.append('--config.' + item)
    else:
      raise ValueError(f'not an override (want key=value or --config.key=value): {item!r}')
  return args


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.x=y` / `--config.x y` arguments from the others.

  Returns (overrides as `--config.x=y` strings, remaining arguments). Used on the unknown
  arguments of a launcher's argparse parser, so `--config.x=y` passes straight through.
  """
  overrides, rest = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config.'):
      if '=' in arg:
        overrides.append(arg)
      elif i + 1 < len(argv):
        overrides.append(f'{arg}={argv[i + 1]}')
        i += 1
      else:
        raise ValueError(f'override {arg} has no value')
    else:
      rest.append(arg)
    i += 1
  return overrides, rest


def repo_relative(path: str) -> str:
  """A path inside the repository as a repository-relative path (what remote hosts need).

  Paths outside the repository, remote URLs (`gs://...`) and `file.py:arg` suffixes are kept.
  """
  if '://' in path:
    return path
  base, sep, arg = path.partition(':')
  p = pathlib.Path(base)
  if p.is_absolute():
    try:
      base = str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
      pass
  return base + sep + arg


def resolve_config_path(config: str) -> str:
  """The experiment file as the launched process must name it: repository-relative if inside.

  A path that exists relative to the current directory is made absolute first, so
  `--config ../main/experiments/x.py` from anywhere still becomes `experiments/x.py`.
  """
  base, sep, arg = config.partition(':')
  if '://' not in config and not pathlib.Path(base).is_absolute() and pathlib.Path(base).exists():
    base = str(pathlib.Path(base).resolve())
  return repo_relative(base + sep + arg)


def train_args(config: str, workdir: str, overrides: Overrides = None, *,
               mode: str | None = None, extra: Sequence[str] = ()) -> list[str]:
  """The arguments of `centernet_jax.main` (everything after `python -m centernet_jax.main`)."""
  args = ['--config', config, '--workdir', str(workdir)]
  if mode and mode != 'train':
    args += ['--mode', mode]
  args += override_args(overrides)
  args += list(extra)
  return args


def train_command(config: str, workdir: str, overrides: Overrides = None, *,
                  python: str = 'python', mode: str | None = None,
                  extra: Sequence[str] = ()) -> list[str]:
  """`[python, -m, centernet_jax.main, --config, FILE, --workdir, DIR, overrides..., extra...]`."""
  return [python, '-m', TRAIN_MODULE,
          *train_args(config, workdir, overrides, mode=mode, extra=extra)]


def shell_join(argv: Iterable[str]) -> str:
  """Quotes an argument list for a POSIX shell (`shlex.join`)."""
  return shlex.join([str(a) for a in argv])


_SAFE = re.compile(r'[A-Za-z0-9_@%+=:,./-]+')


def quote_readable(arg: str) -> str:
  """Shell-quotes one word, in double quotes where they suffice (no `$`, backquote, `\\`, `"`, `!`).

  Used for scripts that are themselves quoted again (an ssh `--command`), where single quotes
  would come out as `'"'"'` noise. Same meaning as `shlex.quote`.
  """
  arg = str(arg)
  if _SAFE.fullmatch(arg):
    return arg
  if not re.search(r'[$`\\"!]', arg):
    return f'"{arg}"'
  return shlex.quote(arg)


def shell_join_readable(argv: Iterable[str]) -> str:
  return ' '.join(quote_readable(a) for a in argv)


def env_assignments(env: Mapping[str, str] | None) -> list[str]:
  """`{'A': 'x y'}` -> `["A='x y'"]`: shell-quoted `KEY=VALUE` words for a command prefix."""
  return [f'{k}={shlex.quote(str(v))}' for k, v in (env or {}).items()]


def parse_env(items: Sequence[str] | None) -> dict[str, str]:
  """`['A=1', 'B=x=y']` -> `{'A': '1', 'B': 'x=y'}` (the `--env` flag of the launchers)."""
  env = {}
  for item in items or ():
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise ValueError(f'--env wants KEY=VALUE, got {item!r}')
    env[key] = value
  return env


def add_train_flags(parser: argparse.ArgumentParser, *, workdir_required: bool = True) -> None:
  """The flags every launcher shares: what to train, where, and --dry_run."""
  parser.add_argument('--config', required=True,
                      help='Experiment file (relative to the repository root for remote runs).')
  parser.add_argument('--workdir', required=workdir_required,
                      help='Workdir of the run (gs://... for multi-host runs).')
  parser.add_argument('--mode', default='train', choices=['train', 'eval'])
  parser.add_argument('--dry_run', action='store_true',
                      help='Print every command (and generated file), run nothing.')


def parse_with_overrides(parser: argparse.ArgumentParser,
                         argv: Sequence[str] | None) -> argparse.Namespace:
  """`parser.parse_known_args` where unknown `--config.x=y` become `args.overrides`."""
  args, unknown = parser.parse_known_args(argv)
  overrides, rest = split_overrides(unknown)
  if rest:
    parser.error(f'unrecognized arguments: {" ".join(rest)}')
  args.overrides = overrides
  return args


# ---------------------------------------------------------------------------------------------
# Running commands.


class Runner:
  """Runs commands with streamed (and optionally logged) output, or prints them (dry run).

  Attributes:
    dry_run: print, don't run.
    out: where output and dry-run prints go (sys.stdout by default).
    commands: every command passed to `run`/`capture`, as the printed shell line (for tests
      and for a record of what a launcher did).
  """

  def __init__(self, dry_run: bool = False, out: TextIO | None = None):
    self.dry_run = dry_run
    self.out = out if out is not None else sys.stdout
    self.commands: list[str] = []

  def _print(self, text: str) -> None:
    self.out.write(text + '\n')
    self.out.flush()

  def comment(self, text: str) -> None:
    """Prints `# text` (dry-run annotations and progress notes)."""
    for line in text.splitlines() or ['']:
      self._print(f'# {line}' if line else '#')

  def show(self, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    line = ' '.join(env_assignments(env) + [shell_join(cmd)])
    self.commands.append(line)
    return line

  def run(self, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
          cwd: str | os.PathLike[str] | None = None, log_path: str | os.PathLike[str] | None = None,
          prefix: str = '', line_handler: Callable[[str], None] | None = None,
          check: bool = True) -> int:
    """Runs `cmd` (an argument list, no shell), streaming stdout+stderr line by line.

    Args:
      cmd: the command.
      env: variables added to the current environment.
      cwd: working directory.
      log_path: also append every output line to this file.
      prefix: prepended to each printed line.
      line_handler: called with every output line (e.g. to split per-worker logs); when
        given, it replaces the printing to `out`.
      check: raise CommandError on a non-zero exit status.

    Returns:
      The exit status (0 in a dry run).
    """
    line = self.show(cmd, env)
    if self.dry_run:
      self._print(line)
      return 0
    self._print(f'+ {line}')
    full_env = dict(os.environ, **(env or {}))
    if log_path:
      pathlib.Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # pylint: disable-next=consider-using-with
    log = open(log_path, 'a', encoding='utf-8') if log_path else None
    try:
      proc = subprocess.Popen(list(map(str, cmd)), env=full_env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              bufsize=1, errors='replace')
      try:
        assert proc.stdout is not None
        for text in proc.stdout:
          if log:
            log.write(text)
            log.flush()
          if line_handler:
            line_handler(text)
          else:
            self.out.write(prefix + text)
            self.out.flush()
        returncode = proc.wait()
      except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
      if log:
        log.close()
    if check and returncode != 0:
      raise CommandError(returncode, line)
    return returncode

  def capture(self, cmd: Sequence[str], *, dry_run_result: str = '') -> str:
    """Runs `cmd` and returns its stdout (stripped); in a dry run prints it, returns the stub."""
    line = self.show(cmd)
    if self.dry_run:
      self._print(line)
      return dry_run_result
    result = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise CommandError(result.returncode, f'{line}\n{result.stderr.strip()}')
    return result.stdout.strip()

  def write_file(self, path: str | os.PathLike[str], text: str, *, show: bool | None = None,
                 executable: bool = False) -> None:
    """Writes a generated file (also in a dry run); prints it when `show` (default: dry run)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding='utf-8')
    if executable:
      path.chmod(path.stat().st_mode | 0o111)
    if self.dry_run if show is None else show:
      self.comment(f'---- {path} ----')
      self.out.write(text if text.endswith('\n') else text + '\n')
      self.comment(f'---- end of {path} ----')
      self.out.flush()


class LinePrefixer:
  """Thread-safe writer of whole lines with a prefix, for interleaved process output."""

  def __init__(self, out: TextIO | None = None):
    self._out = out if out is not None else sys.stdout
    self._lock = threading.Lock()

  def write_line(self, prefix: str, line: str) -> None:
    if not line.endswith('\n'):
      line += '\n'
    with self._lock:
      self._out.write(prefix + line)
      self._out.flush()
