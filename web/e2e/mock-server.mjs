#!/usr/bin/env node
// A stand-in for the Rust server, for front-end work only: it follows docs/api.md (routes, list
// envelope, error envelope, SSE events, refresh cookie) with in-memory data so the UI and the
// browser-test harness can run before or without the real binary. It is not the product and
// proves nothing about the server; `npm run e2e` is meant to run against the real `workbench serve`.
//
//   node e2e/mock-server.mjs [--port 8080] [--dist dist]
//   env MOCK_ADMIN_EMAIL / MOCK_ADMIN_PASSWORD (admin@example.com / admin-password),
//       MOCK_TOKEN_TTL_S (access-token lifetime, default 900; small values exercise silent refresh)
import { createServer } from 'node:http'
import { randomBytes, randomUUID } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { extname, join, resolve, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const argv = process.argv.slice(2)
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? argv[i + 1] : def
}
const PORT = Number(opt('port', process.env.PORT ?? 8080))
const DIST = resolve(opt('dist', join(here, '..', 'dist')))
const TOKEN_TTL_S = Number(process.env.MOCK_TOKEN_TTL_S ?? 900)
const now = () => new Date().toISOString()

// ---------------------------------------------------------------- data
let seq = 100
const nextId = () => ++seq
const users = []
const passwords = new Map() // user id -> password
const accessTokens = new Map() // token -> { userId, exp }
const refreshTokens = new Map() // token -> userId
const settings = {
  registration_open: false,
  allow_private_provider_urls: true,
  swanlab: { mode: 'disabled', project: '', workspace: '' },
}
const providers = []
const providerModels = []
const modelConfigs = []
const sessions = []
const messages = []
const comparisons = []
const systemPrompts = []
const testPrompts = []
const running = new Map() // session id -> { stopped }

function addUser(email, password, role = 'user', nickname = null) {
  const u = {
    id: nextId(),
    email,
    nickname,
    role,
    is_admin: role === 'admin',
    is_active: true,
    created_at: now(),
    updated_at: null,
  }
  users.push(u)
  passwords.set(u.id, password)
  return u
}
addUser(
  process.env.MOCK_ADMIN_EMAIL ?? 'admin@example.com',
  process.env.MOCK_ADMIN_PASSWORD ?? 'admin-password',
  'admin',
  'Admin',
)
systemPrompts.push({
  id: nextId(),
  name: '通用助手',
  content: 'You are a helpful assistant.',
  description: null,
  format_type: 'openai',
  category: 'general',
  is_default: false,
  is_system: true,
  created_by: null,
  created_at: now(),
  updated_at: null,
})
testPrompts.push({
  id: nextId(),
  title: 'Fibonacci',
  content: 'Write a Python function for Fibonacci numbers.',
  created_by: null,
  created_at: now(),
  updated_at: null,
})

// ---------------------------------------------------------------- http helpers
class HttpError extends Error {
  constructor(status, code, message, fields) {
    super(message)
    this.status = status
    this.code = code
    this.fields = fields
  }
}
const fail = (status, code, message, fields) => {
  throw new HttpError(status, code, message, fields)
}

function send(res, status, body, headers = {}) {
  if (status === 204) {
    res.writeHead(204, headers)
    return res.end()
  }
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers })
  res.end(JSON.stringify(body))
}

async function readBody(req) {
  const chunks = []
  for await (const c of req) chunks.push(c)
  const text = Buffer.concat(chunks).toString('utf8')
  if (!text) return {}
  try {
    return JSON.parse(text)
  } catch {
    fail(400, 'bad_json', 'Body is not JSON')
  }
}

function paginate(items, url) {
  const page = Math.max(1, Number(url.searchParams.get('page') ?? 1))
  const size = Math.min(100, Math.max(1, Number(url.searchParams.get('page_size') ?? 20)))
  return { items: items.slice((page - 1) * size, page * size), total: items.length, page, page_size: size }
}

const matches = (q, ...fields) =>
  !q ||
  fields.some((f) =>
    String(f ?? '')
      .toLowerCase()
      .includes(q.toLowerCase()),
  )

function cookies(req) {
  return Object.fromEntries(
    (req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim().split('='))
      .filter((p) => p.length === 2),
  )
}

function issueTokens(res, user) {
  const access = randomBytes(16).toString('hex')
  accessTokens.set(access, { userId: user.id, exp: Date.now() + TOKEN_TTL_S * 1000 })
  const refresh = randomBytes(16).toString('hex')
  refreshTokens.set(refresh, user.id)
  res.setHeader('Set-Cookie', `workbench_refresh=${refresh}; HttpOnly; SameSite=Strict; Path=/api/auth; Max-Age=604800`)
  return { access_token: access, token_type: 'Bearer', expires_in: TOKEN_TTL_S, user }
}

function authUser(req) {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')
  const t = m && accessTokens.get(m[1])
  if (!t || t.exp < Date.now()) fail(401, 'unauthorized', 'Missing or expired access token')
  const u = users.find((x) => x.id === t.userId)
  if (!u || !u.is_active) fail(401, 'unauthorized', 'Account disabled')
  return u
}
function adminUser(req) {
  const u = authUser(req)
  if (u.role !== 'admin') fail(403, 'forbidden', 'Administrators only')
  return u
}

function validate(checks) {
  const fields = {}
  for (const [name, ok, why] of checks) if (!ok) fields[name] = why
  if (Object.keys(fields).length) fail(422, 'validation_failed', 'Some fields are invalid', fields)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function sse(res) {
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' })
  return (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
}

const ANSWER = [
  '## 回答\n\nHere is a **Markdown** answer with a list:\n\n- one\n- two\n\n',
  '```python\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```\n\n',
  'And some model output that must stay inert: <script>window.__pwned = true</script> <img src=x onerror="window.__pwned=true">\n',
]

/** Streams one fake answer: reasoning first, then content in small pieces. */
async function streamAnswer(emit, isStopped, extra = {}, { fail: failIt = false, slow = false } = {}) {
  const t0 = Date.now()
  let ttft = null
  const mark = () => (ttft ??= Date.now() - t0)
  let reasoning = ''
  let content = ''
  for (const piece of ['Let me think', ' about this', ' step by step.']) {
    if (isStopped()) break
    await sleep(slow ? 120 : 40)
    mark()
    reasoning += piece
    emit('reasoning', { delta: piece, ...extra })
  }
  if (failIt) {
    emit('error', { code: 'upstream_error', message: 'upstream 500: model exploded', ...extra })
    emit('done', { finish_reason: 'error', metrics: metrics(t0, ttft, ttft, reasoning, content), ...extra })
    return { reasoning, content, finish: 'error', error: 'upstream 500: model exploded' }
  }
  const ttfa = Date.now() - t0
  const text = ANSWER.join('')
  for (let i = 0; i < text.length; i += 12) {
    if (isStopped()) break
    await sleep(slow ? 60 : 15)
    const delta = text.slice(i, i + 12)
    content += delta
    emit('content', { delta, ...extra })
  }
  const finish = isStopped() ? 'stopped' : 'stop'
  emit('usage', { prompt_tokens: 12, completion_tokens: Math.ceil(content.length / 4), ...extra })
  emit('done', { finish_reason: finish, metrics: metrics(t0, ttft, ttfa, reasoning, content), ...extra })
  return { reasoning, content, finish }
}

function metrics(t0, ttft, ttfa, reasoning, content) {
  const total = Date.now() - t0
  const answerTokens = Math.ceil(content.length / 4)
  return {
    ttft_ms: ttft,
    ttfa_ms: ttfa,
    reasoning_tokens: Math.ceil(reasoning.length / 4),
    answer_tokens: answerTokens,
    answer_tokens_per_s: total > ttfa ? (answerTokens * 1000) / (total - ttfa) : null,
    total_ms: total,
  }
}

// ---------------------------------------------------------------- routes
const routes = []
const route = (method, pattern, handler) => {
  const keys = []
  const re = new RegExp(`^${pattern.replace(/\{(\w+)\}/g, (_, k) => (keys.push(k), '([^/]+)'))}$`)
  routes.push({ method, path: pattern, re, keys, handler })
}

route('GET', '/healthz', () => ({ status: 'ok' }))
route('GET', '/readyz', () => ({ status: 'ok' }))

route('POST', '/api/auth/login', async ({ req, res }) => {
  const b = await readBody(req)
  const u = users.find((x) => x.email === b.email)
  if (!u || passwords.get(u.id) !== b.password || !u.is_active) fail(401, 'invalid_credentials', 'Wrong email or password')
  return issueTokens(res, u)
})
route('POST', '/api/auth/refresh', ({ req, res }) => {
  const t = cookies(req).workbench_refresh
  const userId = t && refreshTokens.get(t)
  if (!userId) fail(401, 'invalid_refresh_token', 'No valid refresh token')
  refreshTokens.delete(t) // rotation
  return issueTokens(
    res,
    users.find((x) => x.id === userId),
  )
})
route('POST', '/api/auth/logout', ({ req, res }) => {
  const t = cookies(req).workbench_refresh
  if (t) refreshTokens.delete(t)
  res.setHeader('Set-Cookie', 'workbench_refresh=; HttpOnly; SameSite=Strict; Path=/api/auth; Max-Age=0')
  return [204]
})
route('GET', '/api/auth/me', ({ req }) => authUser(req))
route('PUT', '/api/auth/password', async ({ req }) => {
  const u = authUser(req)
  const b = await readBody(req)
  if (passwords.get(u.id) !== b.current_password)
    fail(422, 'validation_failed', 'Wrong password', { current_password: 'wrong password' })
  validate([['new_password', String(b.new_password ?? '').length >= 8, 'at least 8 characters']])
  passwords.set(u.id, b.new_password)
  return [204]
})

route('GET', '/api/admin/users', ({ req, url }) => {
  adminUser(req)
  const q = url.searchParams.get('q') ?? ''
  return paginate(
    users.filter((u) => matches(q, u.email, u.nickname)),
    url,
  )
})
route('POST', '/api/admin/users', async ({ req }) => {
  adminUser(req)
  const b = await readBody(req)
  validate([
    ['email', /^[^@\s]+@[^@\s]+$/.test(b.email ?? ''), 'not an email address'],
    ['password', String(b.password ?? '').length >= 8, 'at least 8 characters'],
    ['role', !b.role || ['user', 'admin'].includes(b.role), 'user or admin'],
  ])
  if (users.some((u) => u.email === b.email)) fail(409, 'email_taken', 'A user with this email exists')
  return [201, addUser(b.email, b.password, b.role ?? 'user', b.nickname ?? null)]
})
route('PATCH', '/api/admin/users/{id}', async ({ req, p }) => {
  adminUser(req)
  const u = users.find((x) => x.id === Number(p.id)) ?? fail(404, 'not_found', 'No such user')
  const b = await readBody(req)
  const activeAdmins = users.filter((x) => x.role === 'admin' && x.is_active)
  const demotes = (b.role === 'user' || b.is_active === false) && u.role === 'admin' && u.is_active
  if (demotes && activeAdmins.length <= 1) fail(409, 'last_admin', 'Cannot remove the last active admin')
  if (b.role) Object.assign(u, { role: b.role, is_admin: b.role === 'admin' })
  if (typeof b.is_active === 'boolean') u.is_active = b.is_active
  if (b.nickname !== undefined) u.nickname = b.nickname
  u.updated_at = now()
  return u
})
route('PUT', '/api/admin/users/{id}/password', async ({ req, p }) => {
  adminUser(req)
  const u = users.find((x) => x.id === Number(p.id)) ?? fail(404, 'not_found', 'No such user')
  const b = await readBody(req)
  validate([['new_password', String(b.new_password ?? '').length >= 8, 'at least 8 characters']])
  passwords.set(u.id, b.new_password)
  return [204]
})
route('GET', '/api/admin/settings', ({ req }) => (adminUser(req), settings))
route('PATCH', '/api/admin/settings', async ({ req }) => {
  adminUser(req)
  const b = await readBody(req)
  if (typeof b.registration_open === 'boolean') settings.registration_open = b.registration_open
  if (typeof b.allow_private_provider_urls === 'boolean') settings.allow_private_provider_urls = b.allow_private_provider_urls
  if (b.swanlab) {
    const { api_key, ...rest } = b.swanlab
    Object.assign(settings.swanlab, rest)
    if (api_key) settings.swanlab.api_key_masked = `${api_key.slice(0, 3)}…${api_key.slice(-4)}`
  }
  return settings
})

const maskKey = (k) => (k ? `${k.slice(0, 3)}…${k.slice(-4)}` : null)
const publicProvider = ({ api_key, ...p }) => ({ ...p, api_key_masked: maskKey(api_key) })
const findProvider = (id) => providers.find((x) => x.id === decodeURIComponent(id)) ?? fail(404, 'not_found', 'No such provider')

route('GET', '/api/providers', ({ req, url }) => {
  const u = authUser(req)
  const q = url.searchParams.get('q') ?? ''
  const list = providers.filter((p) => (u.role === 'admin' || p.status === 1) && matches(q, p.name, p.id))
  return paginate(list.map(publicProvider), url)
})
route('POST', '/api/providers', async ({ req }) => {
  adminUser(req)
  const b = await readBody(req)
  validate([
    ['name', !!b.name, 'required'],
    ['kind', ['openai', 'anthropic', 'ollama', 'local'].includes(b.kind), 'one of openai, anthropic, ollama, local'],
    ['api_url', /^(https?|local):\/\//.test(b.api_url ?? ''), 'must be an http(s) URL'],
  ])
  const id = b.id || b.name.toLowerCase().replace(/[^a-z0-9]+/g, '-')
  if (providers.some((p) => p.id === id)) fail(409, 'conflict', 'A provider with this id exists')
  const p = {
    id,
    name: b.name,
    kind: b.kind,
    api_url: b.api_url,
    api_key: b.api_key ?? null,
    description: b.description ?? null,
    icon_url: b.icon_url ?? null,
    status: b.status ?? 1,
    created_at: now(),
    updated_at: null,
  }
  providers.push(p)
  return [201, publicProvider(p)]
})
route('GET', '/api/providers/{id}', ({ req, p }) => (authUser(req), publicProvider(findProvider(p.id))))
route('PATCH', '/api/providers/{id}', async ({ req, p }) => {
  adminUser(req)
  const prov = findProvider(p.id)
  const b = await readBody(req)
  for (const k of ['name', 'kind', 'api_url', 'description', 'icon_url', 'status']) if (b[k] !== undefined) prov[k] = b[k]
  if (b.api_key) prov.api_key = b.api_key
  prov.updated_at = now()
  return publicProvider(prov)
})
route('DELETE', '/api/providers/{id}', ({ req, p }) => {
  adminUser(req)
  const prov = findProvider(p.id)
  providers.splice(providers.indexOf(prov), 1)
  return [204]
})
route('POST', '/api/providers/{id}/test', async ({ req, p }) => {
  adminUser(req)
  const prov = findProvider(p.id)
  await sleep(30)
  if (prov.api_url.includes('unreachable')) return { ok: false, latency_ms: 31, error: 'connection refused' }
  return { ok: true, latency_ms: 30, models_seen: 3 }
})
route('POST', '/api/providers/{id}/sync', async ({ req, p }) => {
  adminUser(req)
  const prov = findProvider(p.id)
  let added = 0
  for (const m of ['fast-model', 'reasoning-model', 'fail-model']) {
    if (!providerModels.some((x) => x.provider_id === prov.id && x.model_id === m)) {
      providerModels.push({
        id: `${prov.id}:${m}`,
        provider_id: prov.id,
        model_id: m,
        model_name: m,
        size: null,
        description: null,
        is_vision: false,
        status: 1,
        created_at: now(),
        updated_at: null,
      })
      added++
    }
  }
  return { added, updated: 3 - added, unavailable: 0, total: 3 }
})
route('GET', '/api/providers/{id}/models', ({ req, p, url }) => {
  authUser(req)
  const prov = findProvider(p.id)
  const q = url.searchParams.get('q') ?? ''
  return paginate(
    providerModels.filter((m) => m.provider_id === prov.id && matches(q, m.model_id, m.model_name)),
    url,
  )
})
route('PATCH', '/api/providers/{id}/models/{model}', async ({ req, p }) => {
  adminUser(req)
  const prov = findProvider(p.id)
  const m =
    providerModels.find((x) => x.provider_id === prov.id && x.model_id === decodeURIComponent(p.model)) ??
    fail(404, 'not_found', 'No such model')
  const b = await readBody(req)
  validate([['status', b.status === 0 || b.status === 1, '0 or 1']])
  m.status = b.status
  m.updated_at = now()
  return m
})

function validateConfig(b) {
  const num = (v) => typeof v === 'number' && Number.isFinite(v)
  validate([
    [
      'temperature',
      b.temperature === undefined || (num(b.temperature) && b.temperature >= 0 && b.temperature <= 2),
      'must be between 0 and 2',
    ],
    ['top_p', b.top_p === undefined || (num(b.top_p) && b.top_p >= 0 && b.top_p <= 1), 'must be between 0 and 1'],
    ['max_tokens', b.max_tokens === undefined || (Number.isInteger(b.max_tokens) && b.max_tokens >= 1), 'must be at least 1'],
    ['top_k', b.top_k === undefined || (num(b.top_k) && b.top_k >= 0), 'must be 0 or more'],
  ])
}
const ownConfig = (u, id) =>
  modelConfigs.find((c) => c.id === decodeURIComponent(id) && c.user_id === u.id) ??
  fail(404, 'not_found', 'No such model config')
const publicConfig = ({ user_id, ...c }) => c

route('GET', '/api/model-configs', ({ req, url }) => {
  const u = authUser(req)
  const q = url.searchParams.get('q') ?? ''
  return paginate(modelConfigs.filter((c) => c.user_id === u.id && matches(q, c.model_name, c.model_id)).map(publicConfig), url)
})
route('POST', '/api/model-configs', async ({ req }) => {
  const u = authUser(req)
  const b = await readBody(req)
  validateConfig(b)
  const prov =
    providers.find((p) => p.id === b.provider_id) ??
    fail(422, 'validation_failed', 'Unknown provider', { provider_id: 'unknown provider' })
  const pm = providerModels.find((m) => m.provider_id === prov.id && m.model_id === b.model_id && m.status === 1)
  if (!pm) fail(422, 'validation_failed', 'Model not enabled', { model_id: 'not an enabled model of this provider' })
  const c = {
    id: randomUUID(),
    user_id: u.id,
    provider_id: prov.id,
    provider_name: prov.name,
    model_id: b.model_id,
    model_name: b.model_name || pm.model_name,
    type: b.type ?? 'text',
    temperature: b.temperature ?? 0.7,
    max_tokens: b.max_tokens ?? 8192,
    top_p: b.top_p ?? 0.9,
    top_k: b.top_k ?? 0,
    status: b.status ?? 1,
    created_at: now(),
    updated_at: null,
  }
  modelConfigs.push(c)
  return [201, publicConfig(c)]
})
route('GET', '/api/model-configs/{id}', ({ req, p }) => publicConfig(ownConfig(authUser(req), p.id)))
route('PATCH', '/api/model-configs/{id}', async ({ req, p }) => {
  const c = ownConfig(authUser(req), p.id)
  const b = await readBody(req)
  validateConfig(b)
  for (const k of ['model_name', 'type', 'temperature', 'max_tokens', 'top_p', 'top_k', 'status'])
    if (b[k] !== undefined) c[k] = b[k]
  c.updated_at = now()
  return publicConfig(c)
})
route('DELETE', '/api/model-configs/{id}', ({ req, p }) => {
  const c = ownConfig(authUser(req), p.id)
  modelConfigs.splice(modelConfigs.indexOf(c), 1)
  return [204]
})

const ownSession = (u, id) =>
  sessions.find((s) => s.id === Number(id) && s.user_id === u.id) ?? fail(404, 'not_found', 'No such session')
const publicSession = ({ user_id, ...s }) => s

route('GET', '/api/chat/sessions', ({ req, url }) => {
  const u = authUser(req)
  const q = url.searchParams.get('q') ?? ''
  const list = sessions
    .filter((s) => s.user_id === u.id && matches(q, s.title))
    .sort((a, b) => (b.updated_at ?? b.created_at).localeCompare(a.updated_at ?? a.created_at))
  return paginate(list.map(publicSession), url)
})
route('POST', '/api/chat/sessions', async ({ req }) => {
  const u = authUser(req)
  const b = await readBody(req)
  const s = { id: nextId(), user_id: u.id, title: b.title || '新对话', created_at: now(), updated_at: now() }
  sessions.push(s)
  return [201, publicSession(s)]
})
route('GET', '/api/chat/sessions/{id}', ({ req, p }) => publicSession(ownSession(authUser(req), p.id)))
route('PATCH', '/api/chat/sessions/{id}', async ({ req, p }) => {
  const s = ownSession(authUser(req), p.id)
  const b = await readBody(req)
  validate([['title', !!String(b.title ?? '').trim(), 'required']])
  s.title = b.title
  s.updated_at = now()
  return publicSession(s)
})
route('DELETE', '/api/chat/sessions/{id}', ({ req, p }) => {
  const s = ownSession(authUser(req), p.id)
  sessions.splice(sessions.indexOf(s), 1)
  for (let i = messages.length - 1; i >= 0; i--) if (messages[i].session_id === s.id) messages.splice(i, 1)
  return [204]
})
route('GET', '/api/chat/sessions/{id}/messages', ({ req, p, url }) => {
  const s = ownSession(authUser(req), p.id)
  return paginate(
    messages.filter((m) => m.session_id === s.id),
    url,
  )
})
route('POST', '/api/chat/sessions/{id}/stop', ({ req, p }) => {
  const s = ownSession(authUser(req), p.id)
  const r = running.get(s.id)
  if (r) r.stopped = true
  return [204]
})
route('GET', '/api/chat/sessions/{id}/export', ({ req, p, url, res }) => {
  const s = ownSession(authUser(req), p.id)
  const list = messages.filter((m) => m.session_id === s.id)
  const fmt = url.searchParams.get('format') ?? 'md'
  const body =
    fmt === 'json'
      ? JSON.stringify({ session: publicSession(s), messages: list }, null, 2)
      : list.map((m) => `### ${m.role}\n\n${m.content}\n`).join('\n')
  res.writeHead(200, {
    'Content-Type': fmt === 'json' ? 'application/json' : 'text/markdown',
    'Content-Disposition': `attachment; filename="session-${s.id}.${fmt}"`,
  })
  res.end(body)
  return null
})

async function chatStream({ req, res, s, content, configId, userMsg }) {
  const cfg =
    modelConfigs.find((c) => c.id === configId) ??
    fail(422, 'validation_failed', 'Unknown model config', { model_config_id: 'unknown' })
  const emit = sse(res)
  const assistant = {
    id: nextId(),
    session_id: s.id,
    role: 'assistant',
    content: '',
    reasoning: '',
    model_name: cfg.model_name,
    model_config_id: cfg.id,
    created_at: now(),
  }
  emit('meta', { session_id: s.id, user_message_id: userMsg.id, assistant_message_id: assistant.id, model: cfg.model_name })
  const state = { stopped: false }
  running.set(s.id, state)
  req.on('close', () => (state.stopped = true))
  const out = await streamAnswer(
    emit,
    () => state.stopped,
    {},
    { fail: cfg.model_id.includes('fail'), slow: content.includes('slow') },
  )
  running.delete(s.id)
  Object.assign(assistant, { content: out.content, reasoning: out.reasoning, finish_reason: out.finish })
  messages.push(assistant)
  if (s.title === '新对话') s.title = content.slice(0, 30)
  s.updated_at = now()
  res.end()
  return null
}

route('POST', '/api/chat/sessions/{id}/messages', async ({ req, res, p }) => {
  const u = authUser(req)
  const s = ownSession(u, p.id)
  const b = await readBody(req)
  validate([
    ['content', !!String(b.content ?? '').trim(), 'required'],
    ['model_config_id', !!b.model_config_id, 'required'],
  ])
  const userMsg = { id: nextId(), session_id: s.id, role: 'user', content: b.content, created_at: now() }
  messages.push(userMsg)
  return chatStream({ req, res, s, content: b.content, configId: b.model_config_id, userMsg })
})
route('POST', '/api/chat/sessions/{id}/regenerate', async ({ req, res, p }) => {
  const s = ownSession(authUser(req), p.id)
  const b = await readBody(req)
  const list = messages.filter((m) => m.session_id === s.id)
  const last = list.at(-1)
  if (last?.role === 'assistant') messages.splice(messages.indexOf(last), 1)
  const userMsg =
    messages.filter((m) => m.session_id === s.id && m.role === 'user').at(-1) ??
    fail(409, 'nothing_to_regenerate', 'No message to answer')
  return chatStream({ req, res, s, content: userMsg.content, configId: b.model_config_id ?? last?.model_config_id, userMsg })
})
route('PUT', '/api/chat/sessions/{id}/messages/{mid}', async ({ req, res, p }) => {
  const s = ownSession(authUser(req), p.id)
  const b = await readBody(req)
  const userMsg =
    messages.find((m) => m.id === Number(p.mid) && m.session_id === s.id && m.role === 'user') ??
    fail(404, 'not_found', 'No such message')
  userMsg.content = b.content
  const idx = messages.indexOf(userMsg)
  for (let i = messages.length - 1; i > idx; i--) if (messages[i].session_id === s.id) messages.splice(i, 1)
  return chatStream({ req, res, s, content: b.content, configId: b.model_config_id, userMsg })
})

async function runComparison({ req, res, test }) {
  const emit = sse(res)
  let closed = false
  req.on('close', () => (closed = true))
  emit('meta', { test_id: test.id, model_config_ids: test.model_config_ids })
  const outs = await Promise.all(
    test.model_config_ids.map(async (id) => {
      const cfg = modelConfigs.find((c) => c.id === id)
      if (!cfg) {
        emit('error', { code: 'not_found', message: 'model config not found', model_config_id: id })
        emit('done', { finish_reason: 'error', metrics: {}, model_config_id: id })
        return { model_config_id: id, error: 'model config not found', finish_reason: 'error' }
      }
      emit('meta', { model: cfg.model_name, model_config_id: id })
      const out = await streamAnswer(emit, () => closed, { model_config_id: id }, { fail: cfg.model_id.includes('fail') })
      return {
        model_config_id: id,
        model_name: cfg.model_name,
        content: out.content,
        reasoning: out.reasoning,
        error: out.error ?? null,
        finish_reason: out.finish,
      }
    }),
  )
  test.results = outs
  res.end()
  return null
}
const ownTest = (u, id) =>
  comparisons.find((c) => c.id === Number(id) && c.user_id === u.id) ?? fail(404, 'not_found', 'No such comparison')
const publicTest = ({ user_id, ...c }) => c

route('POST', '/api/comparisons', async ({ req, res }) => {
  const u = authUser(req)
  const b = await readBody(req)
  const ids = Array.isArray(b.model_config_ids) ? b.model_config_ids : []
  validate([
    ['input', !!String(b.input ?? '').trim(), 'required'],
    ['model_config_ids', ids.length >= 2 && ids.length <= 8, 'between 2 and 8 model configs'],
  ])
  const test = {
    id: nextId(),
    user_id: u.id,
    test_name: b.test_name || String(b.input).slice(0, 30),
    input_data: b.input,
    model_config_ids: ids,
    results: [],
    created_at: now(),
  }
  comparisons.unshift(test)
  return runComparison({ req, res, test })
})
route('GET', '/api/comparisons', ({ req, url }) => {
  const u = authUser(req)
  const q = url.searchParams.get('q') ?? ''
  return paginate(comparisons.filter((c) => c.user_id === u.id && matches(q, c.test_name, c.input_data)).map(publicTest), url)
})
route('GET', '/api/comparisons/{id}', ({ req, p }) => publicTest(ownTest(authUser(req), p.id)))
route('DELETE', '/api/comparisons/{id}', ({ req, p }) => {
  const t = ownTest(authUser(req), p.id)
  comparisons.splice(comparisons.indexOf(t), 1)
  return [204]
})
route('POST', '/api/comparisons/{id}/rerun', async ({ req, res, p }) =>
  runComparison({ req, res, test: ownTest(authUser(req), p.id) }),
)
route('GET', '/api/comparisons/{id}/export', ({ req, p, url, res }) => {
  const t = ownTest(authUser(req), p.id)
  const fmt = url.searchParams.get('format') ?? 'json'
  const body =
    fmt === 'csv'
      ? 'model_config_id,content\n' +
        t.results.map((r) => `${r.model_config_id},"${String(r.content ?? '').replace(/"/g, '""')}"`).join('\n')
      : fmt === 'md'
        ? t.results.map((r) => `## ${r.model_name}\n\n${r.content}`).join('\n\n')
        : JSON.stringify(publicTest(t), null, 2)
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Disposition': `attachment; filename="comparison-${t.id}.${fmt}"` })
  res.end(body)
  return null
})

function crud(path, store, { validateBody, searchFields, readOnly = () => false }) {
  const find = (id) => store.find((x) => x.id === Number(id)) ?? fail(404, 'not_found', 'Not found')
  route('GET', path, ({ req, url }) => {
    authUser(req)
    const q = url.searchParams.get('q') ?? ''
    const cat = url.searchParams.get('category') ?? ''
    return paginate(
      store.filter((x) => matches(q, ...searchFields.map((f) => x[f])) && (!cat || x.category === cat)),
      url,
    )
  })
  route('POST', path, async ({ req }) => {
    const u = authUser(req)
    const b = await readBody(req)
    validateBody(b)
    const item = { ...b, id: nextId(), created_by: u.id, created_at: now(), updated_at: null }
    store.unshift(item)
    return [201, item]
  })
  route('GET', `${path}/{id}`, ({ req, p }) => (authUser(req), find(p.id)))
  route('PATCH', `${path}/{id}`, async ({ req, p }) => {
    const u = authUser(req)
    const item = find(p.id)
    if (readOnly(item, u)) fail(403, 'forbidden', 'Built-in prompts are read-only')
    Object.assign(item, await readBody(req), { updated_at: now() })
    return item
  })
  route('DELETE', `${path}/{id}`, ({ req, p }) => {
    const u = authUser(req)
    const item = find(p.id)
    if (readOnly(item, u)) fail(403, 'forbidden', 'Built-in prompts are read-only')
    store.splice(store.indexOf(item), 1)
    return [204]
  })
}
crud('/api/system-prompts', systemPrompts, {
  searchFields: ['name', 'content', 'description'],
  validateBody: (b) =>
    validate([
      ['name', !!b.name, 'required'],
      ['content', !!b.content, 'required'],
    ]),
  readOnly: (item, u) => item.is_system && u.role !== 'admin',
})
crud('/api/test-prompts', testPrompts, {
  searchFields: ['title', 'content'],
  validateBody: (b) =>
    validate([
      ['title', !!b.title, 'required'],
      ['content', !!b.content, 'required'],
    ]),
})

// ---------------------------------------------------------------- local models, datasets, training
// The registry mirrors into a built-in `local` provider so "Chat" and "Compare" make ordinary
// model configs; a training task is simulated: it emits a step every MOCK_STEP_MS (default 250 ms)
// over SSE, then registers its adapter.
const STEP_MS = Number(process.env.MOCK_STEP_MS ?? 250)
const localModels = []
const datasets = []
const trainingConfigs = []
const tasks = []
const taskRuns = new Map() // task id -> { metrics: [], log: [], listeners: Set }

providers.push({
  id: 'local',
  name: 'Local engine',
  kind: 'local',
  api_url: 'local://engine',
  api_key: null,
  description: 'Local models served by the built-in engine',
  icon_url: null,
  status: 1,
  created_at: now(),
  updated_at: null,
})
function mirrorLocal(m) {
  const existing = providerModels.find((x) => x.provider_id === 'local' && x.model_id === m.name)
  const row = {
    id: `local:${m.name}`,
    provider_id: 'local',
    model_id: m.name,
    model_name: m.display_name,
    size: m.size_bytes,
    description: m.description,
    is_vision: false,
    status: m.is_available && m.status === 'ready' ? 1 : 0,
    created_at: m.created_at,
    updated_at: null,
  }
  if (existing) Object.assign(existing, row)
  else providerModels.push(row)
}
function addLocalModel(fields) {
  const m = {
    id: nextId(),
    display_name: fields.name,
    status: 'ready',
    is_available: true,
    description: null,
    base_model_id: null,
    size_bytes: null,
    created_by: null,
    created_at: now(),
    updated_at: null,
    ...fields,
  }
  localModels.unshift(m)
  mirrorLocal(m)
  return m
}
addLocalModel({
  name: 'SmolLM2-135M-Instruct-Q4_1',
  display_name: 'SmolLM2 135M Instruct (Q4_1)',
  model_path: '/srv/workbench/data/models/SmolLM2-135M-Instruct-Q4_1.gguf',
  model_type: 'base',
  size_bytes: 94_371_840,
  parameters: {
    architecture: 'llama',
    model_name: 'SmolLM2 135M Instruct',
    context_length: 8192,
    hidden_size: 576,
    num_layers: 30,
    num_heads: 9,
    vocab_size: 49152,
  },
})
const visibleModel = (u, m) => m.model_type !== 'lora' || m.created_by === u.id || u.role === 'admin'
const findModel = (u, id) =>
  localModels.find((m) => m.id === Number(id) && visibleModel(u, m)) ?? fail(404, 'not_found', 'No such model')
const ownModel = (u, id) => {
  const m = findModel(u, id)
  if (u.role !== 'admin' && m.created_by !== u.id) fail(403, 'forbidden', 'Not your model')
  return m
}

route('GET', '/api/models', ({ req, url }) => {
  const u = authUser(req)
  const type = url.searchParams.get('model_type') ?? ''
  if (type && !['base', 'lora'].includes(type))
    fail(422, 'validation_failed', 'Bad type', { model_type: 'must be "base" or "lora"' })
  return paginate(
    localModels.filter((m) => visibleModel(u, m) && (!type || m.model_type === type)),
    url,
  )
})
route('GET', '/api/models/{id}', ({ req, p }) => findModel(authUser(req), p.id))
route('POST', '/api/models', async ({ req }) => {
  const u = adminUser(req)
  const b = await readBody(req)
  const base = localModels.find((m) => m.id === b.base_model_id && m.model_type === 'base')
  validate([
    ['name', /^[A-Za-z0-9._-]{1,100}$/.test(b.name ?? ''), "must be 1 to 100 characters of a-z, A-Z, 0-9, '.', '-' and '_'"],
    ['model_type', ['base', 'lora'].includes(b.model_type), 'must be "base" or "lora"'],
    [
      'model_path',
      b.model_type === 'lora' ? /^\/.+/.test(b.model_path ?? '') : /\.gguf$/i.test(b.model_path ?? ''),
      b.model_type === 'lora' ? 'no such folder on the server' : 'no such file on the server',
    ],
    ['base_model_id', b.model_type !== 'lora' || !!base, 'required for a LoRA adapter'],
  ])
  if (localModels.some((m) => m.name === b.name)) fail(409, 'model_exists', `a model named "${b.name}" is already registered`)
  const m = addLocalModel({
    name: b.name,
    display_name: b.display_name || b.name,
    model_path: b.model_path,
    model_type: b.model_type,
    description: b.description ?? null,
    base_model_id: base?.id ?? null,
    size_bytes: 1_234_567,
    created_by: u.id,
    parameters:
      b.model_type === 'lora'
        ? { r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'], base_model_id: base.id }
        : { architecture: 'llama', context_length: 2048, num_layers: 12 },
  })
  return [201, m]
})
route('PATCH', '/api/models/{id}', async ({ req, p }) => {
  const m = ownModel(authUser(req), p.id)
  const b = await readBody(req)
  validate([['display_name', b.display_name === undefined || b.display_name.trim() !== '', 'must not be empty']])
  if (b.display_name !== undefined) m.display_name = b.display_name.trim()
  if (b.description !== undefined) m.description = b.description || null
  if (typeof b.is_available === 'boolean') m.is_available = b.is_available
  m.updated_at = now()
  mirrorLocal(m)
  return m
})
route('DELETE', '/api/models/{id}', ({ req, p }) => {
  const m = ownModel(authUser(req), p.id)
  const adapters = localModels.filter((x) => x.base_model_id === m.id).length
  if (adapters) fail(409, 'model_in_use', `${adapters} adapter(s) are registered on this base model; remove them first`)
  if (tasks.some((t) => t.model_id === m.id && ['pending', 'running'].includes(t.status)))
    fail(409, 'model_in_use', 'a pending or running training task uses this model')
  localModels.splice(localModels.indexOf(m), 1)
  const pm = providerModels.findIndex((x) => x.provider_id === 'local' && x.model_id === m.name)
  if (pm >= 0) providerModels.splice(pm, 1)
  return [204]
})
route('POST', '/api/models/scan', ({ req }) => {
  adminUser(req)
  return { added: [], missing: [], restored: [], skipped: ['notes.txt: not a GGUF file or an adapter folder'] }
})
route('POST', '/api/models/{id}/model-config', ({ req, p }) => {
  const u = authUser(req)
  const m = findModel(u, p.id)
  if (m.status !== 'ready' || !m.is_available)
    fail(422, 'validation_failed', 'Not usable', { id: 'this model cannot be chatted with now' })
  const existing = modelConfigs.find((c) => c.user_id === u.id && c.provider_id === 'local' && c.model_id === m.name)
  if (existing) return publicConfig(existing)
  const c = {
    id: randomUUID(),
    user_id: u.id,
    provider_id: 'local',
    provider_name: 'Local engine',
    model_id: m.name,
    model_name: m.display_name,
    type: 'text',
    temperature: 0.7,
    max_tokens: 256,
    top_p: 0.9,
    top_k: 0,
    status: 1,
    created_at: now(),
    updated_at: null,
  }
  modelConfigs.push(c)
  return [201, publicConfig(c)]
})

// Datasets and training configs: just enough for the task form's pickers and the e2e setup.
route('GET', '/api/datasets', ({ req, url }) => {
  const u = authUser(req)
  return paginate(
    datasets.filter((d) => d.uploaded_by === u.id),
    url,
  )
})
route('POST', '/api/datasets', async ({ req }) => {
  const u = authUser(req)
  const chunks = []
  for await (const c of req) chunks.push(c)
  const text = Buffer.concat(chunks).toString('utf8')
  const field = (n) => new RegExp(`name="${n}"\\r\\n\\r\\n([^\\r]*)`).exec(text)?.[1]
  const name = field('name') || 'dataset'
  const d = {
    id: nextId(),
    name,
    description: null,
    format_type: 'alpaca',
    record_count: 8,
    file_size: text.length,
    uploaded_by: u.id,
    created_at: now(),
  }
  datasets.unshift(d)
  return [201, d]
})
route('GET', '/api/datasets/{id}', ({ req, p }) => {
  const u = authUser(req)
  return datasets.find((d) => d.id === Number(p.id) && d.uploaded_by === u.id) ?? fail(404, 'not_found', 'No such dataset')
})
route('GET', '/api/training-configs/{id}', ({ req, p }) => {
  const u = authUser(req)
  return trainingConfigs.find((c) => c.id === Number(p.id) && c.created_by === u.id) ?? fail(404, 'not_found', 'No such config')
})
route('GET', '/api/training-configs', ({ req, url }) => {
  const u = authUser(req)
  return paginate(
    trainingConfigs.filter((c) => c.created_by === u.id),
    url,
  )
})
route('POST', '/api/training-configs', async ({ req }) => {
  const u = authUser(req)
  const b = await readBody(req)
  validate([['name', !!b.name, 'required']])
  const { name, config_data, ...rest } = b
  const c = { id: nextId(), name, config_data: config_data ?? rest, created_by: u.id, created_at: now(), updated_at: null }
  trainingConfigs.unshift(c)
  return [201, c]
})

const ownTask = (u, id) =>
  tasks.find((t) => t.id === Number(id) && (t.created_by === u.id || u.role === 'admin')) ??
  fail(404, 'not_found', 'No such task')
const taskStatus = (t) => ({
  status: t.status,
  progress: t.progress,
  current_step: t.current_step,
  total_steps: t.total_steps,
  eta_seconds: t.eta_seconds,
  swanlab_url: t.swanlab_url,
  ...(t.error_message ? { error: t.error_message } : {}),
})
function emitTask(t, event, data) {
  const run = taskRuns.get(t.id)
  if (event === 'metrics') run.metrics.push(data)
  if (event === 'log') run.log.push(data.line)
  for (const l of run.listeners) l(event, data)
}
const taskLog = (t, line) => emitTask(t, 'log', { line: `[${new Date().toISOString()}] ${line}` })
const setTaskStatus = (t, status, extra = {}) => {
  Object.assign(t, { status }, extra)
  emitTask(t, 'status', taskStatus(t))
}

function simulate(t) {
  const total = t.total_steps
  let step = 0
  let minLoss = Infinity
  let loss = 2.8
  const start = Date.now()
  setTimeout(() => {
    if (t.status !== 'pending') return
    setTaskStatus(t, 'running', { started_at: now() })
    taskLog(t, `loading ${t.model_name}`)
    taskLog(t, `dataset: 8 records, ${total} optimizer steps`)
    const timer = setInterval(() => {
      if (t.status !== 'running') return clearInterval(timer)
      step++
      loss = Math.max(0.4, loss * (0.93 + Math.random() * 0.05))
      minLoss = Math.min(minLoss, loss)
      const elapsed = (Date.now() - start) / 1000
      const eta = ((total - step) * STEP_MS) / 1000
      const lr = 2e-4 * (step < 3 ? step / 3 : 0.5 * (1 + Math.cos((Math.PI * (step - 3)) / (total - 3))))
      const m = {
        step,
        total_steps: total,
        epoch: (step / total) * 2,
        loss,
        lr,
        grad_norm: 0.5 + Math.random(),
        tokens_per_s: 900 + Math.random() * 200,
        elapsed,
        eta,
      }
      Object.assign(t, { current_step: step, progress: (100 * step) / total, eta_seconds: Math.round(eta) })
      emitTask(t, 'metrics', m)
      taskLog(t, `step ${step}/${total} loss=${loss.toFixed(4)} lr=${lr.toExponential(2)}`)
      emitTask(t, 'status', taskStatus(t))
      if (step >= total) {
        clearInterval(timer)
        const adapter = addLocalModel({
          name: `${t.name.replace(/[^A-Za-z0-9._-]+/g, '-')}-lora-${t.id}`,
          display_name: `${t.name} (LoRA)`,
          model_path: `/srv/workbench/data/training/${t.id}/adapter`,
          model_type: 'lora',
          base_model_id: t.model_id,
          size_bytes: 1_843_200,
          created_by: t.created_by,
          parameters: {
            r: 8,
            lora_alpha: 16,
            target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
            base_model_id: t.model_id,
          },
        })
        taskLog(t, `saved adapter to ${adapter.model_path}`)
        setTaskStatus(t, 'completed', {
          completed_at: now(),
          progress: 100,
          eta_seconds: 0,
          adapter_model_id: adapter.id,
          report: {
            duration_s: (Date.now() - start) / 1000,
            final_loss: loss,
            min_loss: minLoss,
            tokens_seen: total * 512,
            adapter_path: adapter.model_path,
            adapter_size_bytes: adapter.size_bytes,
          },
        })
      }
    }, STEP_MS)
  }, 600)
}

route('GET', '/api/training-tasks', ({ req, url }) => {
  const u = authUser(req)
  const status = url.searchParams.get('status') ?? ''
  return paginate(
    tasks.filter((t) => (t.created_by === u.id || u.role === 'admin') && (!status || t.status === status)),
    url,
  )
})
route('POST', '/api/training-tasks', async ({ req }) => {
  const u = authUser(req)
  const b = await readBody(req)
  const base = localModels.find((m) => (m.id === b.model_id || m.name === b.model_name) && m.model_type === 'base')
  validate([
    ['name', !!b.name?.trim(), 'must not be empty'],
    ['model_id', !!base, 'no such base model'],
    ['dataset_id', datasets.some((d) => d.id === b.dataset_id && d.uploaded_by === u.id), 'no such dataset'],
    ['config_id', trainingConfigs.some((c) => c.id === b.config_id && c.created_by === u.id), 'no such training config'],
  ])
  const t = {
    id: nextId(),
    name: b.name.trim(),
    model_name: base.name,
    model_id: base.id,
    dataset_id: b.dataset_id,
    config_id: b.config_id,
    status: 'pending',
    progress: 0,
    current_step: 0,
    total_steps: Number(process.env.MOCK_TASK_STEPS ?? 40),
    eta_seconds: null,
    output_dir: null,
    swanlab_url: settings.swanlab.mode === 'offline' ? '/srv/workbench/data/swanlog/run-1' : null,
    started_at: null,
    completed_at: null,
    created_by: u.id,
    created_at: now(),
    error_message: null,
    adapter_model_id: null,
    report: null,
  }
  tasks.unshift(t)
  taskRuns.set(t.id, { metrics: [], log: [], listeners: new Set() })
  taskLog(t, 'queued')
  simulate(t)
  return [201, t]
})
route('GET', '/api/training-tasks/{id}', ({ req, p }) => ownTask(authUser(req), p.id))
route('DELETE', '/api/training-tasks/{id}', ({ req, p }) => {
  const t = ownTask(authUser(req), p.id)
  if (['pending', 'running'].includes(t.status)) fail(409, 'task_active', 'cancel the task first')
  tasks.splice(tasks.indexOf(t), 1)
  return [204]
})
route('POST', '/api/training-tasks/{id}/cancel', ({ req, p }) => {
  const t = ownTask(authUser(req), p.id)
  if (!['pending', 'running'].includes(t.status)) fail(409, 'task_finished', 'the task has already finished')
  taskLog(t, 'cancelled by the user')
  setTaskStatus(t, 'cancelled', { completed_at: now(), eta_seconds: null })
  return t
})
route('GET', '/api/training-tasks/{id}/log', ({ req, p, url }) => {
  const t = ownTask(authUser(req), p.id)
  const lines = taskRuns.get(t.id).log
  const tail = Math.max(1, Number(url.searchParams.get('tail') ?? 200))
  return { lines: lines.slice(-tail), total: lines.length }
})
route('GET', '/api/training-tasks/{id}/events', ({ req, res, p }) => {
  const t = ownTask(authUser(req), p.id)
  const run = taskRuns.get(t.id)
  const emit = sse(res)
  // History first (status, every step, the log tail), then live events; the stream ends with the task.
  emit('status', taskStatus(t))
  for (const m of run.metrics) emit('metrics', m)
  for (const line of run.log.slice(-500)) emit('log', { line })
  if (['completed', 'failed', 'cancelled'].includes(t.status)) {
    res.end()
    return null
  }
  const listener = (event, data) => {
    emit(event, data)
    if (event === 'status' && ['completed', 'failed', 'cancelled'].includes(data.status)) {
      run.listeners.delete(listener)
      res.end()
    }
  }
  run.listeners.add(listener)
  req.on('close', () => run.listeners.delete(listener))
  return null
})

// What the browser tests read to know which pages the server offers.
route('GET', '/api/openapi.json', () => ({
  openapi: '3.1.0',
  info: { title: 'mock', version: '0' },
  paths: Object.fromEntries(routes.filter((r) => r.path.startsWith('/api/')).map((r) => [r.path, {}])),
}))

// ---------------------------------------------------------------- static files (SPA)
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.ico': 'image/x-icon',
}
async function serveStatic(res, pathname) {
  const file = resolve(DIST, `.${decodeURIComponent(pathname)}`)
  let target = join(DIST, 'index.html')
  if (file.startsWith(DIST)) {
    const st = await stat(file).catch(() => null)
    if (st?.isFile()) target = file
  }
  const body = await readFile(target).catch(() => null)
  if (!body) return send(res, 404, { error: { code: 'not_found', message: 'web/dist is missing: run npm run build' } })
  res.writeHead(200, { 'Content-Type': TYPES[extname(target)] ?? 'application/octet-stream' })
  res.end(body)
}

// ---------------------------------------------------------------- server
const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', `http://${req.headers.host ?? 'localhost'}`)
  try {
    for (const r of routes) {
      if (r.method !== req.method) continue
      const m = r.re.exec(url.pathname)
      if (!m) continue
      const p = Object.fromEntries(r.keys.map((k, i) => [k, m[i + 1]]))
      const out = await r.handler({ req, res, url, p })
      if (out === null) return
      if (Array.isArray(out)) return send(res, out[0], out[1])
      return send(res, 200, out)
    }
    if (url.pathname.startsWith('/api/')) fail(404, 'not_found', `No route ${req.method} ${url.pathname}`)
    return serveStatic(res, url.pathname)
  } catch (err) {
    if (res.headersSent) return res.end()
    if (err instanceof HttpError) {
      return send(res, err.status, {
        error: { code: err.code, message: err.message, ...(err.fields ? { fields: err.fields } : {}) },
      })
    }
    console.error(err)
    return send(res, 500, { error: { code: 'internal', message: 'Internal error' } })
  }
})
server.listen(PORT, '127.0.0.1', () => console.log(`mock API on http://127.0.0.1:${PORT} (dist: ${DIST})`))
