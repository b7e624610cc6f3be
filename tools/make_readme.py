"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here), and
t2i_nb/_cli_help.py, the commands' --help texts that t2i_nb.cli prints without importing torch.

    python tools/make_readme.py          # rewrite README.md and t2i_nb/_cli_help.py
    python tools/make_readme.py --check  # exit 1 if either is not current (CI)
"""
import sys
from pathlib import Path
import nbformat
sys.path.insert(0, str(Path(__file__).parent))
from nbmd import notebook_md

root = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n'

def readme_text():
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    return HEADER + notebook_md(nb)

def help_text():
    from t2i_nb.cli import help_module_text
    return help_module_text()

if __name__ == '__main__':
    for path, make in ((root/'README.md', readme_text), (root/'t2i_nb'/'_cli_help.py', help_text)):
        text = make()
        if '--check' in sys.argv:
            if not path.exists() or path.read_text() != text:
                sys.exit(f'{path.name} is not current: run `python tools/make_readme.py` and commit it')
            print(f'{path.name} is current')
        else:
            path.write_text(text); print(f'wrote {path}')
