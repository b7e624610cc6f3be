"""Check the built docs site as a reader sees it: open every page in headless Chromium.

    python tools/check_site.py _docs            # after `python tools/build_docs.py`

SITE_DIR is served on a localhost port (http.server in a thread) and every `*.html` page under it is opened in
Debian's Chromium (`apt-get install chromium chromium-driver`), driven through the Chrome DevTools Protocol over
`--remote-debugging-pipe`: no Python package and no downloaded browser are needed. For each page it reports
- console errors (console.error, uncaught exceptions, browser-side errors: what ChromeDriver calls SEVERE),
- failed resource loads (network errors and HTTP status >= 400),
- <img> elements that did not render (naturalWidth == 0 once loaded),
- broken internal links (same origin): the target must load, and for `#fragment` an element with that id or
  name must exist on the target page as rendered.
One line per problem (`page: problem`), then `N pages, M images, K internal links checked: P problems`;
exit status 1 on problems, 2 when Chromium is missing or cannot be driven.
"""
import fcntl, functools, http.server, json, os, shutil, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.parse, urllib.request
from pathlib import Path

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage', '--disable-extensions', '--disable-default-apps', '--no-default-browser-check',
         '--mute-audio', '--hide-scrollbars', '--window-size=1280,1024']
PAGE_TIMEOUT = 30.0   # seconds for one page to fire `load`
IDLE = 0.3            # seconds with no request in flight after `load` before the page is inspected
SETTLE = 5.0          # ... but no more than this after `load`

def die(msg): print(f'check_site: {msg}', file=sys.stderr); sys.exit(2)

def find_chromium():
    "Debian's real binary (skips the /usr/bin/chromium shell wrapper), else whatever chromium is on PATH."
    if os.environ.get('CHROMIUM'):  # an explicit choice: that one or none
        c = shutil.which(os.environ['CHROMIUM'])
        return c if c and os.access(c, os.X_OK) else None
    for c in ('/usr/lib/chromium/chromium', shutil.which('chromium'), shutil.which('chromium-browser')):
        if c and os.access(c, os.X_OK): return c

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def end_headers(self):
        self.send_header('Cache-Control', 'no-store'); super().end_headers()

def serve(site):
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Handler, directory=str(site)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f'http://127.0.0.1:{httpd.server_address[1]}/'

class CDP:
    "Chrome DevTools Protocol over --remote-debugging-pipe: NUL-terminated JSON on the child's fds 3 (in) and 4 (out)."
    def __init__(self, exe, profile):
        to_r, self._w = os.pipe()      # we write commands -> chromium reads fd 3
        self._r, from_w = os.pipe()    # chromium writes fd 4 -> we read
        hi = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_r, from_w)]  # above 3 and 4, so dup2 cannot clobber
        os.close(to_r); os.close(from_w)
        def child(): os.dup2(hi[0], 3); os.dup2(hi[1], 4)  # subprocess closes other fds after this; 3 and 4 are kept
        self.proc = subprocess.Popen([exe, *FLAGS, '--remote-debugging-pipe', f'--user-data-dir={profile}', 'about:blank'],
                                     pass_fds=(3, 4), preexec_fn=child,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in hi: os.close(fd)
        self._id, self._lock, self._cv = 0, threading.Lock(), threading.Condition()
        self.results, self.events, self.closed = {}, [], False
        self.listeners, self.ignored = [], set()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        buf = b''
        while True:
            try: chunk = os.read(self._r, 1 << 16)
            except OSError: chunk = b''
            if not chunk: break
            buf += chunk
            while b'\0' in buf:
                raw, buf = buf.split(b'\0', 1)
                msg = json.loads(raw)
                if 'id' in msg:
                    if msg['id'] in self.ignored: self.ignored.discard(msg['id']); continue
                    with self._cv: self.results[msg['id']] = msg; self._cv.notify_all()
                else:
                    for f in list(self.listeners): f(msg)
        with self._cv: self.closed = True; self._cv.notify_all()

    def post(self, method, params=None, session=None):
        "Send without waiting for the answer (safe from an event listener, which runs on the reader thread)."
        with self._lock:
            self._id += 1; i = self._id
            msg = {'id': i, 'method': method, 'params': params or {}}
            if session: msg['sessionId'] = session
            os.write(self._w, json.dumps(msg).encode() + b'\0')
        return i

    def send(self, method, params=None, session=None, timeout=PAGE_TIMEOUT):
        i = self.post(method, params, session)
        end = time.monotonic() + timeout
        with self._cv:
            while i not in self.results:
                if self.closed: raise RuntimeError(f'chromium exited during {method}')
                if not self._cv.wait(end - time.monotonic()) and time.monotonic() >= end:
                    raise TimeoutError(f'{method}: no answer in {timeout:.0f}s')
            r = self.results.pop(i)
        if 'error' in r: raise RuntimeError(f"{method}: {r['error'].get('message')}")
        return r.get('result', {})

    def close(self):
        try: self.send('Browser.close', timeout=5)
        except Exception: pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        for fd in (self._w, self._r):
            try: os.close(fd)
            except OSError: pass

class Page:
    """One tab; records what a load produces: console errors, failed requests, `load` fired, requests in flight.
    Workers and frames the page starts are attached too (their console and network count for the page)."""
    def __init__(self, cdp):
        self.cdp = cdp
        tid = cdp.send('Target.createTarget', {'url': 'about:blank'})['targetId']
        self.sid = cdp.send('Target.attachToTarget', {'targetId': tid, 'flatten': True})['sessionId']
        self.sessions = {self.sid}
        cdp.listeners.append(self._on)
        for d in ('Page', 'Runtime', 'Log', 'Network'): self.send(f'{d}.enable')
        self.send('Network.setCacheDisabled', {'cacheDisabled': True})
        self.send('Target.setAutoAttach', {'autoAttach': True, 'waitForDebuggerOnStart': True, 'flatten': True})
        self.reset()

    def _attach(self, sid):
        "A worker or frame of the page started (paused): watch its console and network, then let it run."
        self.sessions.add(sid)
        for m in ('Runtime.enable', 'Network.enable', 'Log.enable', 'Runtime.runIfWaitingForDebugger'):
            self.cdp.ignored.add(self.cdp.post(m, session=sid))

    def send(self, method, params=None, **kw): return self.cdp.send(method, params, session=self.sid, **kw)

    def reset(self):
        self.errors, self.loaded, self.inflight, self.quiet, self.last_net = [], False, {}, set(), time.monotonic()

    def _on(self, msg):
        if msg.get('sessionId') not in self.sessions: return
        m, p = msg['method'], msg.get('params', {})
        if m == 'Target.attachedToTarget': self._attach(p['sessionId'])
        elif m == 'Target.detachedFromTarget': self.sessions.discard(p.get('sessionId'))
        elif m == 'Page.loadEventFired' and msg['sessionId'] == self.sid: self.loaded = True
        elif m == 'Runtime.consoleAPICalled' and p.get('type') in ('error', 'assert'):
            text = ' '.join(str(a.get('value', a.get('description', a.get('type')))) for a in p.get('args', []))
            self.errors.append(f'console error: {text}')
        elif m == 'Runtime.exceptionThrown':
            d = p['exceptionDetails']
            text = d.get('exception', {}).get('description') or d.get('text')
            self.errors.append(f"uncaught exception: {text.splitlines()[0] if text else '?'} ({d.get('url', '')}:{d.get('lineNumber', 0) + 1})")
        elif m == 'Log.entryAdded' and p['entry']['level'] == 'error' and p['entry'].get('source') not in ('network', 'worker'):
            # network: reported below with the URL; worker: the worker's own session reports it
            self.errors.append(f"console error ({p['entry'].get('source')}): {p['entry']['text']}")
        elif m == 'Network.requestWillBeSent':
            self.inflight[p['requestId']] = p['request']['url']; self.last_net = time.monotonic()
            if p.get('type') == 'Other' and urllib.parse.urlsplit(p['request']['url']).path == '/favicon.ico':
                self.quiet.add(p['requestId'])  # the browser's own favicon probe: a reader never sees it fail
        elif m == 'Network.responseReceived':
            r = p['response']
            if r['status'] >= 400 and p['requestId'] not in self.quiet: self.errors.append(f"failed to load {r['url']}: HTTP {r['status']}")
        elif m in ('Network.loadingFinished', 'Network.loadingFailed'):
            url = self.inflight.pop(p['requestId'], '?'); self.last_net = time.monotonic()
            if m == 'Network.loadingFailed' and not p.get('canceled'):
                self.errors.append(f"failed to load {url}: {p.get('blockedReason') or p.get('errorText')}")

    def load(self, url):
        self.reset()
        r = self.send('Page.navigate', {'url': url})
        if r.get('errorText'): self.errors.append(f"navigation failed: {r['errorText']}"); return False
        end = time.monotonic() + PAGE_TIMEOUT
        while not self.loaded:
            if time.monotonic() > end: self.errors.append(f'page did not finish loading in {PAGE_TIMEOUT:.0f}s'); return False
            time.sleep(0.02)
        end = min(end, time.monotonic() + SETTLE)
        while (self.inflight or time.monotonic() - self.last_net < IDLE) and time.monotonic() < end: time.sleep(0.02)
        return True

    def eval(self, js):
        r = self.send('Runtime.evaluate', {'expression': js, 'awaitPromise': True, 'returnByValue': True})
        if 'exceptionDetails' in r: raise RuntimeError(r['exceptionDetails'].get('exception', {}).get('description'))
        return r['result'].get('value')

# After `load`: make lazy images load, wait for each to settle, then report images, links and anchors.
INSPECT = """(async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); })));
  return {
    images: imgs.map(i => ({src: i.currentSrc || i.src || i.getAttribute('src') || '', w: i.naturalWidth, complete: i.complete})),
    links: [...document.querySelectorAll('a[href], area[href]')].map(a => a.href),
    anchors: [...document.querySelectorAll('[id]')].map(e => e.id)
             .concat([...document.querySelectorAll('a[name]')].map(e => e.getAttribute('name'))),
  };
})()"""

def short(url, base): return url[len(base) - 1:] if url.startswith(base) else url

def check_site(site):
    site = Path(site).resolve()
    if not (site/'index.html').exists(): die(f'{site}/index.html does not exist: build the site first (python tools/build_docs.py)')
    exe = find_chromium()
    if not exe: die('Chromium is not installed: apt-get install chromium chromium-driver')
    httpd, base = serve(site)
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html'))
    problems, found, anchors, n_img = [], {}, {}, 0   # found: page -> (links, ...); anchors: url -> set of ids
    profile = tempfile.mkdtemp(prefix='check_site_chromium.')
    cdp = None
    try:
        cdp = CDP(exe, profile)
        cdp.send('Browser.getVersion', timeout=60)
        tab = Page(cdp)
        for rel in pages:
            url = base + urllib.parse.quote(rel)
            ok = tab.load(url)
            res = {'images': [], 'links': [], 'anchors': []}
            if ok:
                try: res = tab.eval(INSPECT)
                except Exception as e: tab.errors.append(f'cannot inspect the page: {e}')
            for e in dict.fromkeys(tab.errors): problems.append((rel, e))
            for im in res['images']:
                n_img += 1
                if not im['w']: problems.append((rel, f"image does not render: {short(im['src'], base) or '<img> without src'}"))
            anchors[url] = set(res['anchors'])
            found[rel] = res['links']
        # internal links: the target must load (HTTP 200); a #fragment must name an element on the target as rendered
        n_links, status = 0, {}
        for rel, links in found.items():
            for href in dict.fromkeys(links):
                if not href.startswith(base): continue
                n_links += 1
                target, _, frag = href.partition('#')
                if target not in status:
                    try:
                        with urllib.request.urlopen(urllib.request.Request(target, method='HEAD'), timeout=10) as r: status[target] = r.status
                    except urllib.error.HTTPError as e: status[target] = e.code
                    except Exception as e: status[target] = str(e)
                if status[target] != 200:
                    problems.append((rel, f'broken link {short(href, base)}: target gives {status[target]}')); continue
                frag = urllib.parse.unquote(frag)
                if not frag: continue
                ids = anchors.get(target)
                if ids is None and target.endswith('/') and target + 'index.html' in anchors: ids = anchors[target + 'index.html']
                if ids is None: continue  # not an HTML page of the site (a file download): the target loads, that is all
                if frag not in ids: problems.append((rel, f'broken link {short(href, base)}: no id or name "{frag}" on {short(target, base)}'))
    except (RuntimeError, TimeoutError, OSError) as e:
        die(f'cannot drive Chromium ({exe}): {e}')
    finally:
        if cdp: cdp.close()
        httpd.shutdown(); httpd.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    for rel, p in problems: print(f'{rel}: {p}')
    print(f'{len(pages)} pages, {n_img} images, {n_links} internal links checked: {len(problems)} problems')
    return not problems

if __name__ == '__main__':
    if len(sys.argv) != 2 or sys.argv[1].startswith('-'): print(__doc__, file=sys.stderr); sys.exit(2)
    sys.exit(0 if check_site(sys.argv[1]) else 1)
