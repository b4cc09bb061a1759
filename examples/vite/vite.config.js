// The example's models are built into ../web/models (output_dir: web/models): Vite serves that
// folder as it is, so they are at /models/. Top-level await (main.js) needs an ES2022 target.
export default { publicDir: "../web", build: { target: "es2022" } };
