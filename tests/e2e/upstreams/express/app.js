// Express with its default routing (case-insensitive, non-strict trailing slash): every
// request answered with what Express made of it. Binds 127.0.0.1:0, prints `LISTENING <port>`.
const express = require("express");

const app = express();

const answer = (handler) => (req, res) => {
  res.status(handler ? 200 : 404).json({
    handler,
    method: req.method,
    path: req.path,
    raw_path: req.originalUrl,
    headers: req.headers,
    client_id: req.get("x-client-id") ?? null,
    client_id_underscore: req.get("x_client_id") ?? null,
  });
};

for (const name of ["health", "public", "admin", "workflows"]) {
  app.all(`/${name}{/*rest}`, answer(name));
}
app.all("/validation/:id", answer("validation"));
app.use(answer(null));

const server = app.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${server.address().port}`);
});
