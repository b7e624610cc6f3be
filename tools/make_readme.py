"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here).

    python tools/make_readme.py          # rewrite README.md
    python tools/make_readme.py --check  # exit 1 if README.md is not current (CI)
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

if __name__ == '__main__':
    text, readme = readme_text(), root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is not current: run `python tools/make_readme.py` and commit it')
        print('README.md is current')
    else:
        readme.write_text(text); print(f'wrote {readme}')
