r"""Checks the two zoo_table runs of parity/zoo_table_odapi.sh; exits 1 listing every failure.

 python parity/check_zoo_table.py --stage first|second --dir runs/zoo_table_odapi \
   --rows NAME,NAME --missing NAME --exit_status N

--stage first (after run 1, the `--missing` row's archive moved aside): zoo_table exited 0,
`table_run1.md` lists that row as missing and every other row done with our AP and ms (and
`runs/<row>/zoo_row.json` agreeing); the done rows' zoo_row.json (mtime and text) are recorded
in `first_run_rows.json`.
--stage second (after run 2, every archive present): zoo_table exited 0, `table.md` lists every
row done with our AP and ms; the rows done in run 1 were not redone (zoo_row.json unchanged,
run2.log says "done earlier ... not redone" for them) and the missing row was run from its
archive.

"Our AP" is the AP the zoo reports for the row (box AP, keypoint AP or both) as a number,
whatever its value: the archives carry random weights, so this checks the machinery.
"""

import argparse
import json
import math
import os
import sys

from centernet_jax import zoo_table

COLUMNS = ('row', 'box AP zoo', 'box AP ours', 'box diff', 'kpt AP zoo', 'kpt AP ours',
           'kpt diff', 'zoo ms', 'our ms', 'status')
SNAPSHOT = 'first_run_rows.json'


def read_table(path: str) -> dict[str, dict[str, str]]:
  """{row name: {column: cell}} of a zoo_table markdown table."""
  rows = {}
  with open(path) as f:
    for line in f:
      cells = [c.strip() for c in line.strip().split('|')[1:-1]]
      if len(cells) != len(COLUMNS) or '`' not in cells[0]:
        continue
      rows[cells[0].split('`')[1]] = dict(zip(COLUMNS, cells))
  return rows


def is_number(cell: str) -> bool:
  try:
    return math.isfinite(float(cell))
  except ValueError:
    return False


def row_problems(name: str, cells: dict[str, str] | None, runs_dir: str) -> list[str]:
  """A done row: status done, our AP for each AP the zoo gives, our ms, zoo_row.json agreeing."""
  if cells is None:
    return [f'{name}: not in the table']
  problems = []
  if cells['status'] != 'done':
    problems.append(f"{name}: status {cells['status']!r}, expected done")
  published = zoo_table.PUBLISHED_BY_NAME[name]
  wanted = [('box AP ours', published.box_ap), ('kpt AP ours', published.keypoint_ap)]
  for column, zoo_value in wanted:
    if zoo_value is not None and not is_number(cells[column]):
      problems.append(f'{name}: {column} is {cells[column]!r}, expected a number')
  if not is_number(cells['our ms']) or float(cells['our ms']) <= 0:
    problems.append(f"{name}: our ms is {cells['our ms']!r}, expected a positive number")
  row_file = os.path.join(runs_dir, name, zoo_table.ROW_FILE)
  if not os.path.isfile(row_file):
    return problems + [f'{name}: no {row_file}']
  with open(row_file) as f:
    result = json.load(f)
  for key, column in (('box_ap', 'box AP ours'), ('keypoint_ap', 'kpt AP ours'),
                      ('ms', 'our ms')):
    shown = '-' if result.get(key) is None else f'{result[key]:.1f}'
    if shown != cells[column]:
      problems.append(f'{name}: {column} {cells[column]!r} in the table, {shown!r} in '
                      f'{row_file}')
  return problems


def first_stage(args, rows: list[str]) -> list[str]:
  table = read_table(os.path.join(args.dir, 'table_run1.md'))
  runs_dir = os.path.join(args.dir, 'runs')
  problems = []
  missing = table.get(args.missing)
  if missing is None or missing['status'] != 'missing':
    problems.append(f'{args.missing}: archive moved aside, but run 1 lists '
                    f'{missing and missing["status"]!r}, expected missing')
  if os.path.exists(os.path.join(runs_dir, args.missing, zoo_table.ROW_FILE)):
    problems.append(f'{args.missing}: a zoo_row.json exists though its archive was missing')
  snapshot = {}
  for name in rows:
    if name == args.missing:
      continue
    found = row_problems(name, table.get(name), runs_dir)
    problems += found
    row_file = os.path.join(runs_dir, name, zoo_table.ROW_FILE)
    if not found:
      with open(row_file) as f:
        snapshot[name] = {'mtime_ns': os.stat(row_file).st_mtime_ns, 'text': f.read()}
  with open(os.path.join(args.dir, SNAPSHOT), 'w') as f:
    json.dump(snapshot, f, indent=2)
  return problems


def second_stage(args, rows: list[str]) -> list[str]:
  table = read_table(os.path.join(args.dir, 'table.md'))
  runs_dir = os.path.join(args.dir, 'runs')
  problems = []
  for name in rows:
    problems += row_problems(name, table.get(name), runs_dir)
  with open(os.path.join(args.dir, SNAPSHOT)) as f:
    snapshot = json.load(f)
  with open(os.path.join(args.dir, 'run2.log')) as f:
    log = f.read()
  for name, before in snapshot.items():
    row_file = os.path.join(runs_dir, name, zoo_table.ROW_FILE)
    with open(row_file) as f:
      text = f.read()
    if os.stat(row_file).st_mtime_ns != before['mtime_ns'] or text != before['text']:
      problems.append(f'{name}: done in run 1 but {row_file} was rewritten in run 2')
    if not any(f'{name}: done earlier' in line and 'not redone' in line
               for line in log.splitlines()):
      problems.append(f'{name}: run2.log does not say it was done earlier and not redone')
  if f'{args.missing}: done earlier' in log:
    problems.append(f'{args.missing}: missing in run 1, yet "done earlier" in run 2')
  row_file = os.path.join(runs_dir, args.missing, zoo_table.ROW_FILE)
  if os.path.isfile(row_file):
    with open(row_file) as f:
      archive = json.load(f).get('archive', '')
    expected = os.path.abspath(os.path.join(args.dir, 'archives', args.missing))
    if archive != expected:
      problems.append(f'{args.missing}: imported from {archive!r}, expected {expected!r}')
  return problems


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--stage', required=True, choices=('first', 'second'))
  parser.add_argument('--dir', required=True, help='OUT_DIR of parity/zoo_table_odapi.sh.')
  parser.add_argument('--rows', required=True, help='The rows asked of zoo_table.')
  parser.add_argument('--missing', required=True, help='The row moved aside in run 1.')
  parser.add_argument('--exit_status', required=True, type=int,
                      help="zoo_table's exit status in this run.")
  args = parser.parse_args()
  rows = [r.strip() for r in args.rows.split(',') if r.strip()]
  unknown = [r for r in rows if r not in zoo_table.PUBLISHED_BY_NAME]
  if unknown or args.missing not in rows:
    parser.error(f'--rows {unknown} unknown, or --missing {args.missing} not among them')
  problems = [] if args.exit_status == 0 else [
      f'zoo_table exited with status {args.exit_status} (see the run log)']
  problems += (first_stage if args.stage == 'first' else second_stage)(args, rows)
  if problems:
    print(f'check_zoo_table {args.stage}: {len(problems)} failure(s):', file=sys.stderr)
    for p in problems:
      print(f'  {p}', file=sys.stderr)
    return 1
  print(f'check_zoo_table {args.stage}: ok ({len(rows)} rows, {args.missing} '
        f'{"missing" if args.stage == "first" else "done from its archive"})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
