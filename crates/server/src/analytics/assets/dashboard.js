// Flashback live operations dashboard: login, the live stream, charts, withdrawals, health.
// Plain JavaScript, no dependencies; every value goes into the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "flashback.token";
let source = null;
let timers = [];

const $ = (id) => document.getElementById(id);
const money = (minor) => {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  const units = Math.floor(abs / 100).toLocaleString("en-US");
  return `${sign}${units}.${String(abs % 100).padStart(2, "0")}`;
};
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
};
const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (res.status === 401) logout("Your session ended; log in again.");
  if (!res.ok) throw new Error(data?.detail || `${res.status}`);
  return data;
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const res = await fetch("/api/v1/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    });
    const data = await res.json();
    if (!res.ok) throw new Error(data.detail || "login failed");
    if (data.user.role !== "admin") throw new Error("this dashboard is for admins");
    sessionStorage.setItem(TOKEN_KEY, data.token);
    sessionStorage.setItem(TOKEN_KEY + ".user", data.user.username);
    start();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (source) source.close();
  source = null;
  timers.forEach(clearInterval);
  timers = [];
  $("board").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("session").hidden = false;
  $("who").textContent = sessionStorage.getItem(TOKEN_KEY + ".user") || "";
  connect();
  loadWithdrawals();
  loadHealth();
  timers.push(setInterval(loadWithdrawals, 5000), setInterval(loadHealth, 5000));
}

function connect() {
  if (source) source.close();
  const status = $("live-status");
  source = new EventSource(`/api/v1/live?access_token=${encodeURIComponent(token())}`);
  source.addEventListener("snapshot", (e) => {
    status.textContent = "live";
    status.className = "pill live";
    render(JSON.parse(e.data));
  });
  source.onerror = () => {
    status.textContent = "reconnecting…";
    status.className = "pill";
    if (source.readyState === EventSource.CLOSED) {
      // The server refused (expired token, too many clients): check the session, then retry.
      api("GET", "/api/v1/me").then(() => setTimeout(connect, 3000), () => {});
    }
  };
}

function render(s) {
  $("gmv-today").textContent = money(s.today.gmv_minor);
  $("gmv-today").dataset.minor = s.today.gmv_minor;
  $("orders-today").textContent = s.today.paid_orders.toLocaleString("en-US");
  $("orders-today").dataset.count = s.today.paid_orders;
  $("units-today").textContent = s.today.units.toLocaleString("en-US");
  $("refunds-today").textContent = `${s.today.refunded_orders} · ${money(s.today.refunded_minor)}`;
  const recent = s.seconds.slice(-10);
  $("orders-rate").textContent = (recent.reduce((a, p) => a + p.paid_orders, 0) / 10).toFixed(1);
  $("pending-total").textContent = money(s.pending_rebates.total_minor);
  $("pending-total").dataset.minor = s.pending_rebates.total_minor;
  $("snapshot-at").textContent = new Date(s.at_ms).toLocaleTimeString();
  chart($("gmv-chart"), s.seconds.map((p) => p.gmv_minor / 100), "#ff6a3d");
  chart($("orders-chart"), s.seconds.map((p) => p.paid_orders), "#58a6ff");
  renderSales(s.flash_sales);
  rows($("top-skus"), s.top_skus, (k) => [k.sku || k.product_id, k.units, money(k.gmv_minor)]);
  rows($("pending-top"), s.pending_rebates.top, (u) => [u.username || u.user_id, money(u.pending_minor)]);
  counts($("tracking"), s.tracking);
  counts($("admission"), s.admission);
}

function chart(canvas, values, color) {
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = "#2d3640";
  ctx.fillStyle = "#8b98a5";
  ctx.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = h - 16 - ((h - 24) * i) / 4;
    ctx.beginPath(); ctx.moveTo(40, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(((max * i) / 4).toFixed(max < 10 ? 1 : 0), 2, y + 4);
  }
  const step = (w - 44) / Math.max(1, values.length);
  ctx.fillStyle = color;
  values.forEach((v, i) => {
    const bh = ((h - 24) * v) / max;
    ctx.fillRect(42 + i * step, h - 16 - bh, Math.max(1, step - 1), bh);
  });
  ctx.fillStyle = "#8b98a5";
  ctx.fillText("−60 s", 42, h - 2);
  ctx.fillText("now", w - 24, h - 2);
}

function renderSales(sales) {
  const box = $("flash-sales");
  box.replaceChildren();
  if (!sales.length) box.append(el("p", "No open sales.", "muted"));
  for (const s of sales) {
    const div = el("div", undefined, "sale");
    div.dataset.saleId = s.sale_id;
    div.append(el("div", `${s.sku || s.product_id} · ${money(s.sale_price_minor)}`));
    const bar = el("div", undefined, "bar");
    const fill = el("span");
    fill.style.width = `${s.sell_through_bp / 100}%`;
    bar.append(fill);
    div.append(bar);
    const left = el("div", `${s.remaining} of ${s.stock} left · ${(s.sell_through_bp / 100).toFixed(1)}% sold`, "muted remaining");
    div.append(left);
    box.append(div);
  }
}

function rows(tbody, items, cells) {
  tbody.replaceChildren(
    ...items.map((item) => {
      const tr = el("tr");
      cells(item).forEach((c, i) => tr.append(el("td", String(c), i ? "num" : "")));
      return tr;
    }),
  );
}

function counts(dl, map) {
  dl.replaceChildren();
  const entries = Object.entries(map || {});
  if (!entries.length) dl.append(el("dt", "nothing yet"), el("dd", ""));
  for (const [k, v] of entries) dl.append(el("dt", k), el("dd", v.toLocaleString("en-US")));
}

async function loadWithdrawals() {
  try {
    const list = (await api("GET", "/api/v1/admin/withdrawals?state=requested&limit=50")).items;
    const tbody = $("withdrawals");
    tbody.replaceChildren();
    if (!list.length) {
      const tr = el("tr");
      const td = el("td", "Nothing to review.", "muted");
      td.colSpan = 6;
      tr.append(td);
      tbody.append(tr);
    }
    for (const w of list) {
      const tr = el("tr");
      tr.dataset.withdrawalId = w.id;
      tr.append(el("td", w.id), el("td", w.user_id), el("td", money(w.amount_minor), "num"), el("td", w.payee),
        el("td", new Date(w.created_at_ms).toLocaleString()));
      const actions = el("td");
      const approve = el("button", "Approve");
      approve.addEventListener("click", () => review(w.id, "approve"));
      const reject = el("button", "Reject", "secondary");
      reject.addEventListener("click", () => {
        const reason = window.prompt("Why reject this withdrawal?");
        if (reason) review(w.id, "reject", reason);
      });
      actions.append(approve, " ", reject);
      tr.append(actions);
      tbody.append(tr);
    }
  } catch (e) {
    $("withdrawal-message").textContent = `Could not load withdrawals: ${e.message}`;
  }
}

async function review(id, decision, reason) {
  try {
    const w = await api("POST", `/api/v1/admin/withdrawals/${id}/review`, { decision, reason });
    $("withdrawal-message").textContent = `Withdrawal ${id}: ${w.state}.`;
  } catch (e) {
    $("withdrawal-message").textContent = `Withdrawal ${id}: ${e.message}`;
  }
  loadWithdrawals();
}

async function loadHealth() {
  const list = $("health");
  try {
    const res = await fetch("/readyz");
    const data = await res.json();
    const open = (data.breakers || []).filter((b) => b.state !== "closed");
    list.replaceChildren(
      el("li", `instance: ${data.status}`, data.status === "ready" ? "up" : "down"),
      ...data.checks.map((c) => el("li", `${c.name}: ${c.status}${c.detail ? ` (${c.detail})` : ""}`, c.status)),
      ...open.map((b) => el("li", `breaker ${b.dependency}: ${b.state.replace("_", "-")}`, "down")),
    );
  } catch (e) {
    list.replaceChildren(el("li", `instance: unreachable (${e.message})`, "down"));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  if (token()) start();
});
