// Runs a converted TF.js model on TF.js's WebGL backend, which exists only in a browser: one
// headless Chromium (software GL: SwiftShader through ANGLE, so no GPU is needed), kept alive
// across requests, whose page long-polls a loopback HTTP server of ours for jobs and posts the
// outputs back. No puppeteer and no DevTools protocol: plain HTTP, in both directions.
//
// Tensors travel in run_model.mjs's TENSOR format: {"dtype", "shape", "base64"} (little-endian
// bytes; one byte per bool) or {"dtype": "string", "shape", "data": [...]}.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

import { shardFiles } from './model_files.mjs';
import { signatureOutputs } from './runners.mjs';

const FLAGS = [
  '--headless=new', '--no-sandbox', // we run as root, where Chromium's sandbox cannot start
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader', // WebGL without a GPU
  '--ignore-gpu-blocklist', '--no-first-run', '--no-default-browser-check', '--disable-extensions',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', // a small /dev/shm (containers) crashes Chromium; /tmp is used instead
  // A hidden or idle page must not be throttled: TF.js waits for GPU fences with timers.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  // Chromium quits when this pipe closes, i.e. when this Node process dies, however it dies.
  '--remote-debugging-pipe',
];
const POLL_HOLD_MS = 20000; // a /next request is answered "nothing yet" (204) after this
const PICKUP_MS = 10000; // a live page is always polling: a job not taken by then has no page

const PROFILE_PREFIX = 'tfjs-build-chromium-';

class BrowserGone extends Error {}

// The page: TF.js on webgl, then forever: take a job, run it, post the outputs or the error.
const PAGE = `<!doctype html><meta charset="utf-8"><title>tfjs-build webgl</title>
<script src="tf.min.js"></script>
<script>
const TYPED = {float32: Float32Array, int32: Int32Array, bool: Uint8Array};
const post = (where, body) => fetch(where, {method: 'POST', body: JSON.stringify(body)});
const firstLine = (e) => String((e && e.message) || e).split('\\n')[0];
function decode(key, s) {
  if (s.dtype === 'string') return tf.tensor(s.data, s.shape, 'string');
  const Typed = TYPED[s.dtype];
  if (!Typed) throw new Error('input ' + JSON.stringify(key) + ': unsupported dtype ' + s.dtype);
  const bytes = Uint8Array.from(atob(s.base64), (c) => c.charCodeAt(0));
  return tf.tensor(new Typed(bytes.buffer), s.shape, s.dtype);
}
async function encode(t) {
  const data = await t.data();
  if (t.dtype === 'string') return {dtype: 'string', shape: t.shape, data: Array.from(data)};
  const Typed = TYPED[t.dtype];
  if (!Typed) throw new Error('unsupported output dtype ' + t.dtype);
  const typed = data instanceof Typed ? data : Typed.from(data);
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return {dtype: t.dtype, shape: t.shape, base64: btoa(text)};
}
async function start() {
  if (typeof tf === 'undefined') throw new Error('TF.js did not load in the page');
  // setBackend answers false when webgl cannot start (TF.js would then quietly use cpu); why, it
  // says only through console.warn.
  const warned = [];
  const warn = console.warn;
  console.warn = (...args) => { warned.push(args.map(firstLine).join(' ')); warn(...args); };
  const ok = await tf.setBackend('webgl').finally(() => { console.warn = warn; });
  if (!ok) throw new Error('WebGL is unavailable in Chromium: TF.js could not start its webgl backend (' + (warned.join('; ') || 'no reason given') + ')');
  if (tf.getBackend() !== 'webgl') throw new Error('TF.js runs on ' + tf.getBackend() + ', not webgl');
  const gl = tf.backend().gpgpu.gl;
  const ext = gl.getExtension('WEBGL_debug_renderer_info');
  return {backend: 'webgl', float32: tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED'),
          webglVersion: tf.env().getNumber('WEBGL_VERSION'), tfjs: tf.version.tfjs,
          renderer: ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)};
}
async function runJob(job) {
  if (tf.getBackend() !== 'webgl') throw new Error('TF.js is no longer on webgl but on ' + tf.getBackend());
  let t0 = performance.now();
  const layers = job.format === 'layers-model';
  const model = layers ? await tf.loadLayersModel(job.url) : await tf.loadGraphModel(job.url);
  const load = (performance.now() - t0) / 1000;
  t0 = performance.now();
  try {
    // A Sequential model leaves inputNames/outputNames empty; its layers name them.
    const names = (list, tensors) => list.length ? list : tensors.map((t) => t.sourceLayer.name);
    const inNames = layers ? names(model.inputNames, model.inputs) : null;
    const outNames = layers ? names(model.outputNames, model.outputs) : job.outputs;
    const samples = [];
    for (const sample of job.samples) {
      const given = sample.inputs || {};
      const feeds = {};
      for (const key of Object.keys(given)) feeds[key] = decode(key, given[key]);
      let result;
      if (layers) {
        const missing = inNames.filter((k) => !(k in feeds));
        if (missing.length) throw new Error('inputs missing: ' + JSON.stringify(missing) + '; the layers model takes ' + JSON.stringify(inNames));
        const list = inNames.map((k) => feeds[k]);
        result = model.predict(list.length === 1 ? list[0] : list);
      } else {
        result = await model.executeAsync(feeds, outNames);
      }
      if (!Array.isArray(result)) result = [result];
      const outputs = {};
      for (const [i, key] of outNames.entries()) outputs[key] = await encode(result[i]);
      tf.dispose([...Object.values(feeds), ...result]);
      samples.push({outputs});
    }
    return {samples, seconds: {load, run: (performance.now() - t0) / 1000}};
  } finally {
    model.dispose();
  }
}
(async () => {
  try {
    await post('hello', {info: await start()});
  } catch (e) {
    await post('hello', {error: firstLine(e)});
    return;
  }
  for (;;) {
    let job;
    try {
      const response = await fetch('next');
      if (response.status !== 200) continue; // nothing to do yet: ask again
      job = await response.json();
    } catch (e) {
      await new Promise((wake) => setTimeout(wake, 100)); // a dropped poll: no busy loop
      continue;
    }
    // A scope of its own: every tensor of the job is freed, even after a failure.
    tf.engine().startScope();
    let answer;
    try {
      answer = await runJob(job);
    } catch (e) {
      answer = {error: firstLine(e)};
    } finally {
      tf.engine().endScope();
    }
    await post('result', {id: job.id, ...answer}).catch(() => {}); // Node times the job out
  }
})();
</script>`;

export class BrowserRunner {
  constructor({ chromium, runtimeDir, log = () => {} }) {
    this.chromium = chromium;
    this.runtimeRequire = createRequire(path.join(path.resolve(runtimeDir), 'package.json'));
    this.log = log;
    this.server = null; // the HTTP server, kept across browser restarts
    this.browser = null; // {child, profileDir, stderrTail, ready: Promise<info>, hello, failStart}
    this.job = null; // the job being run: {id, payload, files, taken, resolve, reject}
    this.poll = null; // a page's /next response held open
    this.queue = Promise.resolve(); // runs one at a time: the page runs one job at a time
    this.token = randomBytes(16).toString('hex'); // see serve()
    this.nextId = 1;
    this.onExit = () => this.killBrowser();
    process.on('exit', this.onExit);
  }

  run(request) {
    const result = this.queue.then(() => this.runWithRestart(request));
    this.queue = result.catch(() => {});
    return result;
  }

  async close() {
    process.off('exit', this.onExit);
    this.killBrowser();
    if (this.server != null) {
      this.server.closeAllConnections();
      await new Promise((resolve) => this.server.close(resolve));
      this.server = null;
    }
  }

  // A browser that died (killed, crashed) is started again, once per request.
  async runWithRestart(request) {
    try {
      return await this.runOnce(request);
    } catch (e) {
      if (!(e instanceof BrowserGone)) throw e;
      this.log(`webgl: ${e.message}; starting Chromium again`);
      this.killBrowser();
      try {
        return await this.runOnce(request);
      } catch (again) {
        if (!(again instanceof BrowserGone)) throw again;
        throw new Error(`webgl: ${again.message} while running ${request.modelDir}, after one restart already`);
      }
    }
  }

  async runOnce({ modelDir, modelJson, samples, outputs, timeoutMs = 120000 }) {
    const files = await shardFiles(modelDir, modelJson);
    const deadline = Date.now() + timeoutMs;
    let startup;
    if (this.browser == null) {
      const start = performance.now();
      await this.startBrowser(timeoutMs);
      startup = (performance.now() - start) / 1000;
    }
    const info = await this.browser.ready;
    const id = this.nextId++;
    const layers = modelJson.format === 'layers-model';
    const wanted = layers ? null : signatureOutputs(modelJson, path.join(modelDir, 'model.json'), outputs);
    const payload = { id, url: `model/${id}/model.json`, format: modelJson.format ?? 'graph-model', samples, outputs: wanted };
    const answer = await new Promise((resolve, reject) => {
      this.job = { id, payload, files, modelJson, taken: false, resolve, reject };
      const timer = setTimeout(() => {
        // The page may be stuck in a shader or a GPU wait: only a new browser is sure to be well.
        this.killBrowser();
        reject(new Error(`webgl: timed out after ${timeoutMs / 1000} s running ${modelDir} in Chromium (Chromium was stopped; the next run starts it again)`));
      }, Math.max(0, deadline - Date.now()));
      const pickup = setTimeout(() => {
        if (!this.job?.taken) reject(new BrowserGone('the Chromium page stopped asking for work (did its renderer crash?)'));
      }, PICKUP_MS);
      this.job.settle = () => { clearTimeout(timer); clearTimeout(pickup); this.job = null; };
      this.handOut();
    }).finally(() => this.job?.settle());
    if (answer.error != null) throw new Error(`webgl: ${answer.error} (${modelDir}, in Chromium)`);
    const seconds = { ...answer.seconds, ...(startup != null ? { startup } : {}) };
    return { samples: answer.samples, seconds, info };
  }

  // Gives the current job to the page's waiting /next request, if both are there.
  handOut() {
    if (this.job == null || this.job.taken || this.poll == null) return;
    const response = this.poll;
    this.poll = null;
    this.job.taken = true;
    sendText(response, 200, JSON.stringify(this.job.payload), 'application/json');
  }

  async startBrowser(timeoutMs) {
    if (this.server == null) this.server = await this.listen();
    removeStaleProfiles();
    const profileDir = mkdtempSync(path.join(os.tmpdir(), `${PROFILE_PREFIX}${process.pid}-`));
    const url = `http://${this.host}/${this.token}/`;
    const args = [...FLAGS, `--user-data-dir=${profileDir}`, url];
    const command = this.chromium; // its flags: FLAGS above
    // Own process group: killing it ends the GPU and renderer processes too. fds 3 and 4 are the
    // --remote-debugging-pipe, which we never use but whose end tells Chromium we are gone.
    // Its own temporary files (org.chromium.Chromium.*) go into the profile, removed with it.
    const child = spawn(this.chromium, args, {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, TMPDIR: profileDir },
    });
    const browser = { child, profileDir, stderrTail: '' };
    this.browser = browser;
    child.stdio[4].resume(); // the pipe Chromium writes DevTools messages to: drained, unread
    child.stderr.on('data', (chunk) => { browser.stderrTail = (browser.stderrTail + chunk).slice(-4000); });
    const tail = () => browser.stderrTail.trim().split('\n').slice(-3).join(' | ') || '(none)';
    browser.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(
        `webgl: Chromium did not get TF.js ready within ${timeoutMs / 1000} s (${command}); stderr: ${tail()}`)), timeoutMs);
      browser.hello = (info) => { clearTimeout(timer); resolve(info); };
      browser.failStart = (e) => { clearTimeout(timer); reject(e); };
    });
    child.on('error', (e) => browser.failStart(new Error(`webgl: cannot start Chromium (${command}): ${e.message}`)));
    child.on('exit', (code, signal) => {
      const how = signal != null ? `was killed by ${signal}` : `exited with code ${code}`;
      browser.failStart(new Error(`webgl: Chromium ${how} before TF.js was ready (${command}); stderr: ${tail()}`));
      if (this.browser !== browser) return; // stopped by us
      this.killBrowser(); // its GPU and renderer processes may outlive it
      this.job?.reject(new BrowserGone(`Chromium ${how}`));
    });
    // Neither Chromium nor its pipes keep Node running; process.on('exit') stops Chromium.
    for (const handle of [child, ...child.stdio]) handle?.unref?.();
    try {
      this.log(`webgl: Chromium ${child.pid} ready: ${JSON.stringify(await browser.ready)}`);
    } catch (e) {
      this.killBrowser();
      throw e;
    }
  }

  killBrowser() {
    const browser = this.browser;
    if (browser == null) return;
    try {
      process.kill(-browser.child.pid, 'SIGKILL');
    } catch { /* already gone */ }
    this.browser = null;
    this.poll?.destroy();
    this.poll = null;
    try {
      // Retries: the killed processes may still be writing there for a moment.
      rmSync(browser.profileDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } catch (e) {
      this.log(`webgl: could not remove Chromium's profile ${browser.profileDir}: ${e.message}`);
    }
  }

  listen() {
    const server = http.createServer((request, response) => {
      this.serve(request, response).catch((e) => sendText(response, 500, e.message));
    });
    server.on('connection', (socket) => socket.unref()); // the page's polls do not keep Node running
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        this.host = `127.0.0.1:${server.address().port}`;
        resolve(server.unref());
      });
    });
  }

  // Only for our page: other local users and processes can reach a loopback port too, and a web
  // page in a desktop browser can post to one (or rebind a name to it). Every route is below a
  // random token the page's URL holds, and the Host must be this server's address.
  async serve(request, response) {
    const url = new URL(request.url, 'http://127.0.0.1');
    const prefix = `/${this.token}/`;
    if (request.headers.host !== this.host || !url.pathname.startsWith(prefix)) {
      return sendText(response, 404, 'not found');
    }
    const route = `${request.method} /${url.pathname.slice(prefix.length)}`;
    if (route === 'GET /') return sendText(response, 200, PAGE, 'text/html');
    if (route === 'GET /tf.min.js') {
      this.bundle ??= await readFile(this.runtimeRequire.resolve('@tensorflow/tfjs/dist/tf.min.js'));
      return sendText(response, 200, this.bundle, 'text/javascript');
    }
    if (route === 'POST /hello') {
      const said = await readJson(request);
      sendText(response, 204, '');
      if (said.error != null) this.browser?.failStart(new Error(`webgl: ${said.error}`));
      else this.browser?.hello(said.info);
      return;
    }
    if (route === 'GET /next') {
      this.poll?.writeHead(204).end();
      this.poll = response;
      const timer = setTimeout(() => { if (this.poll === response) { this.poll = null; response.writeHead(204).end(); } }, POLL_HOLD_MS);
      response.on('close', () => { clearTimeout(timer); if (this.poll === response) this.poll = null; });
      return this.handOut();
    }
    if (route === 'POST /result') {
      const answer = await readJson(request);
      sendText(response, 204, '');
      if (this.job?.id === answer.id) this.job.resolve(answer);
      return;
    }
    // The current job's model.json and the shards its weightsManifest lists, nothing else.
    const match = /^\/model\/(\d+)\/(.+)$/.exec(route.slice(route.indexOf(' ') + 1));
    const job = this.job;
    if (request.method === 'GET' && match != null && job != null && Number(match[1]) === job.id) {
      const name = decodeURIComponent(match[2]);
      if (name === 'model.json') return sendText(response, 200, JSON.stringify(job.modelJson), 'application/json');
      if (job.files.has(name)) return sendText(response, 200, await readFile(job.files.get(name)), 'application/octet-stream');
    }
    sendText(response, 404, 'not found');
  }
}

// Profiles of Chromiums whose Node process died without its 'exit' handler (killed): Chromium
// quit then (its pipe closed), but nobody removed its profile. The folder name holds the pid.
function removeStaleProfiles() {
  for (const name of readdirSync(os.tmpdir())) {
    const pid = Number(name.startsWith(PROFILE_PREFIX) ? name.slice(PROFILE_PREFIX.length).split('-')[0] : NaN);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const folder = path.join(os.tmpdir(), name);
    try {
      if (statSync(folder).uid !== process.getuid()) continue; // another user's: not ours to remove
      process.kill(pid, 0);
    } catch (e) {
      if (e.code === 'ESRCH') rmSync(folder, { recursive: true, force: true });
    }
  }
}

async function readJson(request) {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function sendText(response, status, body, type = 'text/plain') {
  response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
}
