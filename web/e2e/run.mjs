#!/usr/bin/env node
// Browser tests: drives Debian's Chromium through playwright-core against a running server.
//
//   WORKBENCH_URL=http://127.0.0.1:8080 \
//   WORKBENCH_ADMIN_EMAIL=admin@example.com WORKBENCH_ADMIN_PASSWORD=... npm run e2e
//
// Optional: CHROMIUM_PATH (default /usr/bin/chromium), E2E_OUT (default web/test-results),
// E2E_TIMEOUT_MS (per step, default 20000).
// The model flow (add a provider, sync, create configs, stream a chat, stop, compare) runs when
// E2E_PROVIDER_URL points at an OpenAI-compatible (fake) provider the server may reach; then
// E2E_PROVIDER_KIND (default openai), E2E_PROVIDER_KEY, E2E_MODEL (default: the first synced
// model) and E2E_FAIL_MODEL (a model whose stream fails, for the failing comparison column).
// E2E_TOKEN_WAIT_S: wait this long (past the access-token lifetime) and check the session is
// refreshed silently.
// The local models and training flows run when the server offers /api/models and
// /api/training-tasks: they need a ready base model in the registry (the reference model, see
// scripts/fetch-model.sh) and train it for a few steps on a tiny dataset uploaded through the API;
// E2E_TRAIN_TIMEOUT_MS (default 240000) bounds the wait for the task to complete.
// Prints "N passed, M failed" last and exits
// non-zero when anything failed. Screenshots of every main page at 1280x800 and 390x844 go
// to E2E_OUT.
import { chromium } from 'playwright-core'
import { mkdtemp, mkdir, rm } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const BASE = (process.env.WORKBENCH_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '')
const EMAIL = process.env.WORKBENCH_ADMIN_EMAIL ?? ''
const PASSWORD = process.env.WORKBENCH_ADMIN_PASSWORD ?? ''
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const OUT = resolve(process.env.E2E_OUT ?? join(here, '..', 'test-results'))
const STEP_TIMEOUT = Number(process.env.E2E_TIMEOUT_MS ?? 20_000)

const PROVIDER_URL = process.env.E2E_PROVIDER_URL ?? ''
const PROVIDER_KIND = process.env.E2E_PROVIDER_KIND ?? 'openai'
const PROVIDER_KEY = process.env.E2E_PROVIDER_KEY ?? 'sk-e2e-test-key-1234'
const WANT_MODEL = process.env.E2E_MODEL ?? ''
const FAIL_MODEL = process.env.E2E_FAIL_MODEL ?? ''
const TOKEN_WAIT_S = Number(process.env.E2E_TOKEN_WAIT_S ?? 0)
const TRAIN_TIMEOUT = Number(process.env.E2E_TRAIN_TIMEOUT_MS ?? 240_000)

const DESKTOP = { width: 1280, height: 800 }
const PHONE = { width: 390, height: 844 }
const VIEWPORTS = [DESKTOP, PHONE]

/** The main pages: path and screenshot name. Admin pages need an admin account. */
const PAGES = [
  ['/playground', 'playground', '/api/chat/sessions'],
  ['/comparison', 'comparison', '/api/comparisons'],
  ['/system-prompts', 'system-prompts', '/api/system-prompts'],
  ['/test-prompts', 'test-prompts', '/api/test-prompts'],
  ['/model-configs', 'model-configs', '/api/model-configs'],
  ['/datasets', 'datasets', '/api/datasets'],
  ['/training-configs', 'training-configs', '/api/training-configs'],
  ['/providers', 'providers', '/api/providers'],
  ['/admin/users', 'admin-users', '/api/admin/users'],
  ['/admin/settings', 'admin-settings', '/api/admin/settings'],
  ['/account', 'account', '/api/auth/password'],
  ['/models', 'models', '/api/models'],
  ['/training-tasks', 'training-tasks', '/api/training-tasks'],
]

/**
 * The routes the server documents in its OpenAPI document. The UI is built ahead of parts of the
 * API; a page whose API the server does not offer yet is skipped (and said so), not failed.
 */
let servedApi = new Set()
async function loadServedApi() {
  const res = await fetch(`${BASE}/api/openapi.json`)
  if (!res.ok) throw new Error(`GET /api/openapi.json: ${res.status}`)
  servedApi = new Set(Object.keys((await res.json()).paths ?? {}))
}
const serves = (apiPath) => servedApi.has(apiPath)

const results = []
let page
let context

function log(msg) {
  process.stdout.write(`${msg}\n`)
}

/** Runs one named check; a failure is recorded (with a screenshot) and the run goes on. */
async function step(name, fn, timeoutMs = STEP_TIMEOUT * 3) {
  const started = Date.now()
  try {
    await withTimeout(fn(), timeoutMs, name)
    results.push({ name, ok: true })
    log(`  ok   ${name} (${Date.now() - started} ms)`)
    return true
  } catch (err) {
    results.push({ name, ok: false, err })
    log(`  FAIL ${name}: ${err?.message?.split('\n')[0] ?? err}`)
    if (page) await page.screenshot({ path: join(OUT, `FAIL-${slug(name)}.png`), fullPage: true }).catch(() => {})
    return false
  }
}

function withTimeout(p, ms, name) {
  let timer
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`step "${name}" took longer than ${ms} ms`)), ms)
    }),
  ])
}

const slug = (s) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
const assert = (cond, msg) => {
  if (!cond) throw new Error(msg)
}

/** An Element Plus input by data-testid (the attribute lands on the <input> or its wrapper). */
const field = (id) =>
  page.locator(`input[data-testid="${id}"], textarea[data-testid="${id}"], [data-testid="${id}"] input`).first()

async function settle() {
  await page.waitForLoadState('networkidle', { timeout: STEP_TIMEOUT }).catch(() => {})
  // Wait for loading masks to go away: a page that never stops loading fails the step.
  await page.waitForFunction(
    () => ![...document.querySelectorAll('.el-loading-mask')].some((m) => m.offsetParent !== null),
    null,
    {
      timeout: STEP_TIMEOUT,
    },
  )
}

async function visibleErrors() {
  return page.locator('[data-testid="error-alert"]:visible').allInnerTexts()
}

async function shot(name, viewport) {
  // Let CSS transitions (theme colours, drawers after a resize) finish first.
  await page.waitForTimeout(400)
  await page.screenshot({ path: join(OUT, `${name}-${viewport.width}x${viewport.height}.png`), fullPage: false })
}

async function main() {
  if (!EMAIL || !PASSWORD) {
    log('WORKBENCH_ADMIN_EMAIL and WORKBENCH_ADMIN_PASSWORD must be set')
    log('0 passed, 1 failed')
    process.exit(2)
  }
  if (!existsSync(CHROMIUM)) {
    log(`Chromium not found at ${CHROMIUM}: run scripts/install-chromium.sh`)
    log('0 passed, 1 failed')
    process.exit(2)
  }
  await mkdir(OUT, { recursive: true })
  const profile = await mkdtemp(join(tmpdir(), 'workbench-e2e-'))
  log(`e2e against ${BASE}, screenshots in ${OUT}`)

  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
    ],
    viewport: DESKTOP,
    locale: 'zh-CN',
    acceptDownloads: true,
  })
  context.setDefaultTimeout(STEP_TIMEOUT)
  page = context.pages()[0] ?? (await context.newPage())

  const pageErrors = []
  page.on('pageerror', (err) => pageErrors.push(err.message))
  let refreshCalls = 0
  page.on('request', (req) => {
    if (new URL(req.url()).pathname === '/api/auth/refresh') refreshCalls++
  })

  try {
    await step('health endpoint answers', async () => {
      const res = await page.request.get(`${BASE}/healthz`)
      assert(res.ok(), `GET /healthz → ${res.status()}`)
      await loadServedApi()
    })

    await step('a protected page sends a visitor to login with a way back', async () => {
      await page.goto(`${BASE}/model-configs`)
      await page.waitForURL(/\/login\?redirect=/)
      const url = new URL(page.url())
      assert(url.searchParams.get('redirect') === '/model-configs', `redirect was ${url.searchParams.get('redirect')}`)
      for (const vp of VIEWPORTS) {
        await page.setViewportSize(vp)
        await shot('login', vp)
      }
      await page.setViewportSize(DESKTOP)
    })

    await step('a wrong password shows an error', async () => {
      await field('login-email').fill(EMAIL)
      await field('login-password').fill(`${PASSWORD}-wrong`)
      await page.locator('[data-testid="login-submit"]').click()
      await page.locator('[data-testid="login-error"]').waitFor()
      assert(page.url().includes('/login'), 'should stay on login')
    })

    const loggedIn = await step('log in and come back to the page asked for', async () => {
      await field('login-password').fill(PASSWORD)
      await page.locator('[data-testid="login-submit"]').click()
      await page.waitForURL((u) => u.pathname === '/model-configs')
      await page.locator('.el-menu').first().waitFor()
    })
    if (!loggedIn) throw new Error('cannot go on without a session')

    await step('the session survives a reload (refresh cookie)', async () => {
      await page.reload()
      await page.waitForURL((u) => u.pathname === '/model-configs')
      await page.locator('[data-testid="user-menu"]').waitFor()
    })

    for (const vp of VIEWPORTS) {
      for (const [path, name, api] of PAGES) {
        if (!serves(api)) {
          log(`  skip page ${name}: the server does not offer ${api} yet`)
          continue
        }
        await step(`page ${name} at ${vp.width}x${vp.height}`, async () => {
          await page.setViewportSize(vp)
          await page.goto(`${BASE}${path}`)
          await page.waitForURL((u) => u.pathname === path)
          await settle()
          await shot(name, vp)
          const errors = await visibleErrors()
          assert(errors.length === 0, `error shown: ${errors.join(' | ')}`)
          // Nothing may overflow the phone screen sideways.
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
          assert(overflow <= 1, `page is ${overflow}px wider than the screen`)
        })
      }
    }

    await step('phone: the drawer menu opens and navigates', async () => {
      await page.setViewportSize(PHONE)
      await page.goto(`${BASE}/playground`)
      await page.locator('[data-testid="menu-toggle"]').click()
      const drawer = page.locator('.menu-drawer')
      await drawer.waitFor()
      await drawer
        .locator('.el-menu-item')
        .filter({ hasText: /测试提示词|Test prompts/ })
        .click()
      await page.waitForURL((u) => u.pathname === '/test-prompts')
      await drawer.waitFor({ state: 'hidden' })
      await page.setViewportSize(DESKTOP)
    })

    await step('theme toggle switches to dark and back', async () => {
      await page.goto(`${BASE}/playground`)
      const dark = () => page.evaluate(() => document.documentElement.classList.contains('dark'))
      const before = await dark()
      await page.locator('[data-testid="theme-toggle"]').click()
      assert((await dark()) !== before, 'theme did not change')
      await shot('playground-dark', DESKTOP)
      await page.reload()
      await page.locator('[data-testid="theme-toggle"]').waitFor()
      assert((await dark()) !== before, 'theme was not persisted')
      await page.locator('[data-testid="theme-toggle"]').click()
    })

    await step('language switch to English and back', async () => {
      await page.locator('[data-testid="locale-switch"]').click()
      await page.locator('.el-dropdown-menu__item').filter({ hasText: 'English' }).click()
      await page.locator('.el-menu').getByText('Playground', { exact: true }).first().waitFor()
      await page.locator('[data-testid="locale-switch"]').click()
      await page.locator('.el-dropdown-menu__item').filter({ hasText: '简体中文' }).click()
      await page.locator('.el-menu').getByText('对话测试', { exact: true }).first().waitFor()
    })

    if (serves('/api/system-prompts') && serves('/api/test-prompts')) await promptFlow()
    else log('  skip prompt libraries: the server does not offer /api/system-prompts yet')

    if (serves('/api/datasets') && serves('/api/training-configs')) await trainingDataFlow()
    else log('  skip datasets and training configs: the server does not offer /api/datasets yet')

    if (PROVIDER_URL) await modelFlow()
    else log('  skip model flow (set E2E_PROVIDER_URL to run it)')

    if (serves('/api/models')) await localModelsFlow()
    else log('  skip local models: the server does not offer /api/models yet')

    if (serves('/api/training-tasks') && serves('/api/datasets') && serves('/api/training-configs')) await trainingFlow()
    else log('  skip training: the server does not offer /api/training-tasks, /api/datasets or /api/training-configs yet')

    if (TOKEN_WAIT_S > 0) {
      await step(`an expired access token is refreshed silently (after ${TOKEN_WAIT_S}s)`, async () => {
        // Admin pages: their API exists in every build of the server.
        await page.goto(`${BASE}/admin/settings`)
        await settle()
        await page.waitForTimeout(TOKEN_WAIT_S * 1000)
        const before = refreshCalls
        await page
          .locator('.el-menu-item')
          .filter({ hasText: /用户管理|Users/ })
          .first()
          .click()
        await page.waitForURL((u) => u.pathname === '/admin/users')
        await settle()
        const errors = await visibleErrors()
        assert(errors.length === 0, `error shown: ${errors.join(' | ')}`)
        assert(!page.url().includes('/login'), 'was sent to login')
        assert(refreshCalls - before === 1, `expected one refresh call, saw ${refreshCalls - before}`)
      })
    }

    if (TOKEN_WAIT_S > 0) {
      await step('a session that ends sends you to login and back to where you were', async () => {
        await context.clearCookies() // the refresh cookie is gone, as after a logout elsewhere
        await page.waitForTimeout(TOKEN_WAIT_S * 1000)
        await page
          .locator('.el-menu-item')
          .filter({ hasText: /系统设置|Settings/ })
          .first()
          .click()
        await page.waitForURL(/\/login\?redirect=/)
        assert(new URL(page.url()).searchParams.get('redirect') === '/admin/settings', `redirect was ${page.url()}`)
        await field('login-email').fill(EMAIL)
        await field('login-password').fill(PASSWORD)
        await page.locator('[data-testid="login-submit"]').click()
        await page.waitForURL((u) => u.pathname === '/admin/settings')
      })
    }

    const newEmail = `e2e-${Date.now()}@example.com`
    await step('create a user on the admin page', async () => {
      await page.goto(`${BASE}/admin/users`)
      await settle()
      await page.locator('[data-testid="users-create"]').click()
      await field('user-email').fill(newEmail)
      await field('user-password').fill('E2e-password-123!')
      await field('user-nickname').fill('e2e')
      await page.locator('[data-testid="user-submit"]').click()
      await page.locator('.el-message--success').first().waitFor()
      await field('users-search').fill(newEmail)
      await field('users-search').press('Enter')
      await settle()
      await page.locator('[data-testid="users-table"]').getByText(newEmail).waitFor()
      await shot('admin-users-created', DESKTOP)
    })

    await step('a duplicate user is refused with a visible error', async () => {
      await page.locator('[data-testid="users-create"]').click()
      await field('user-email').fill(newEmail)
      await field('user-password').fill('E2e-password-123!')
      await page.locator('[data-testid="user-submit"]').click()
      await page.locator('.el-message--error, .el-form-item__error').first().waitFor()
      await page.keyboard.press('Escape')
    })

    await step('an invalid new user is refused visibly (inline where the server names the field)', async () => {
      await page.locator('[data-testid="users-create"]').click()
      await field('user-email').fill(`e2e-short-${Date.now()}@example.com`)
      await field('user-password').fill('x')
      await page.locator('[data-testid="user-submit"]').click()
      await page.locator('.el-dialog:visible .el-form-item__error, .el-message--error').first().waitFor()
      await page.waitForTimeout(400) // Element Plus shows form-item errors after a short debounce
      const inline = await page.locator('.el-dialog:visible .el-form-item__error').allInnerTexts()
      log(`       inline field errors: ${inline.length ? inline.join(' | ') : 'none (toast only)'}`)
      await page.keyboard.press('Escape')
    })

    await step('disable, enable, promote, demote and reset the password of that user', async () => {
      await page.goto(`${BASE}/admin/users`)
      await settle()
      await field('users-search').fill(newEmail)
      await field('users-search').press('Enter')
      await settle()
      const row = () => page.locator('[data-testid="users-table"] .el-table__row').filter({ hasText: newEmail })
      await row()
        .getByRole('button', { name: /^(禁用|Disable)$/ })
        .click()
      await confirmBox()
      await row()
        .getByText(/^(已禁用|Disabled)$/)
        .waitFor()
      await row()
        .getByRole('button', { name: /^(启用|Enable)$/ })
        .click()
      await row()
        .getByText(/^(正常|Active)$/)
        .waitFor()
      await row().locator('.el-select').click()
      await pickOption(/^(管理员|Admin)$/)
      await page
        .locator('.el-message--success')
        .filter({ hasText: /角色已修改|Role changed/ })
        .first()
        .waitFor()
      await row().locator('.el-select').click()
      await pickOption(/^(普通用户|User)$/)
      await settle()
      await row()
        .getByRole('button', { name: /重置密码|Reset password/ })
        .click()
      await page.locator('.el-dialog:visible input[type="password"]').fill('E2e-new-password-456!')
      await page.locator('.el-dialog:visible .el-button--primary').click()
      await page
        .locator('.el-message--success')
        .filter({ hasText: /密码已重置|Password reset/ })
        .first()
        .waitFor()
    })

    await step('removing the last active admin is refused with the server message', async () => {
      await field('users-search').fill('')
      await field('users-search').press('Enter')
      await settle()
      const rows = page.locator('[data-testid="users-table"] .el-table__row')
      const n = await rows.count()
      let activeAdmins = 0
      let mine = -1
      for (let i = 0; i < n; i++) {
        const role = await rows.nth(i).locator('.el-select').innerText()
        const text = await rows.nth(i).innerText()
        if (/管理员|Admin/.test(role) && /正常|Active/.test(text)) {
          activeAdmins++
          if (text.includes(EMAIL)) mine = i
        }
      }
      if (activeAdmins !== 1 || mine < 0) {
        log(`       skipped: ${activeAdmins} active admins on the first page, demoting one would not be refused`)
        return
      }
      const me = rows.nth(mine)
      await me.locator('.el-select').click()
      await pickOption(/^(普通用户|User)$/)
      await page.locator('.el-message--error').first().waitFor()
      await settle()
      assert((await me.locator('.el-select').innerText()).match(/管理员|Admin/), 'role shown changed anyway')
    })

    await step('log out', async () => {
      await page.goto(`${BASE}/playground`)
      await page.locator('[data-testid="user-menu"]').click()
      await page
        .locator('.el-dropdown-menu__item')
        .filter({ hasText: /退出登录|Log out/ })
        .click()
      await page.waitForURL(/\/login/)
      // The refresh cookie is gone: a reload does not bring the session back.
      await page.goto(`${BASE}/playground`)
      await page.waitForURL(/\/login\?redirect=%2Fplayground|\/login\?redirect=\/playground/)
    })

    await step('no uncaught errors in the page', async () => {
      assert(pageErrors.length === 0, pageErrors.join(' | '))
    })
  } catch (err) {
    log(`aborted: ${err?.message ?? err}`)
    results.push({ name: 'run', ok: false, err })
  } finally {
    await context.close().catch(() => {})
    await rm(profile, { recursive: true, force: true }).catch(() => {})
  }

  const passed = results.filter((r) => r.ok).length
  const failed = results.length - passed
  log(`${passed} passed, ${failed} failed`)
  process.exit(failed > 0 ? 1 : 0)
}

/** Confirms the open ElMessageBox. */
async function confirmBox() {
  await page.locator('.el-message-box:visible .el-message-box__btns .el-button--primary').click()
}

async function promptFlow() {
  const stamp = Date.now()
  await step('create a system prompt and find it by search and category', async () => {
    await page.setViewportSize(DESKTOP)
    await page.goto(`${BASE}/system-prompts`)
    await settle()
    await page.locator('[data-testid="system-prompt-create"]').click()
    await field('system-prompt-name').fill(`e2e prompt ${stamp}`)
    await field('system-prompt-content').fill('You answer like a pirate.')
    await page.locator('.el-dialog:visible .el-button--primary').click()
    await page.locator('.el-message--success').first().waitFor()
    await page.locator('.page-toolbar input').first().fill(`e2e prompt ${stamp}`)
    await page.locator('.page-toolbar input').first().press('Enter')
    await settle()
    await page.locator('[data-testid="system-prompts-table"]').getByText(`e2e prompt ${stamp}`).waitFor()
  })
  await step('create a test prompt', async () => {
    await page.goto(`${BASE}/test-prompts`)
    await settle()
    await page.locator('[data-testid="test-prompt-create"]').click()
    await field('test-prompt-title').fill(`e2e question ${stamp}`)
    await field('test-prompt-content').fill('Name three prime numbers.')
    await page.locator('.el-dialog:visible .el-button--primary').click()
    await page.locator('.el-message--success').first().waitFor()
    await page.locator('[data-testid="test-prompts-table"]').getByText(`e2e question ${stamp}`).waitFor()
  })
  return stamp
}

/** Uploads a small dataset (preview, statistics), a bad one (problems listed), and creates a training config. */
async function trainingDataFlow() {
  const stamp = Date.now()
  const records = [
    { instruction: '把这句话翻译成英文：你好', output: 'Hello' },
    { instruction: 'Name a prime number', input: '', output: '7' },
    { conversations: null },
  ]
  const good = records
    .slice(0, 2)
    .map((r) => JSON.stringify(r))
    .join('\n')
  const upload = async (name, contents) => {
    await page.locator('[data-testid="dataset-upload"]').click()
    await page
      .locator('[data-testid="dataset-file"] input[type="file"]')
      .setInputFiles({ name, mimeType: 'application/jsonl', buffer: Buffer.from(contents) })
    await field('dataset-name').fill(`e2e dataset ${stamp} ${name}`)
    await page.locator('[data-testid="dataset-submit"]').click()
  }
  await step('datasets: upload a small file, see its preview and statistics', async () => {
    await page.setViewportSize(DESKTOP)
    await page.goto(`${BASE}/datasets`)
    await settle()
    await upload('tiny.jsonl', `${good}\n`)
    await page.locator('.el-message--success').first().waitFor()
    const table = page.locator('[data-testid="datasets-table"]')
    await table.getByText(`e2e dataset ${stamp} tiny.jsonl`).click()
    const drawer = page.locator('[data-testid="dataset-detail"]')
    await drawer.locator('[data-testid="dataset-preview"]').getByText('你好').first().waitFor()
    await drawer
      .locator('.el-tabs__item')
      .filter({ hasText: /统计|Statistics/ })
      .click()
    await settle()
    const stats = drawer.locator('[data-testid="dataset-stats"]')
    await stats.locator('.el-descriptions').first().waitFor()
    // With a base model on the server, the token histogram is drawn.
    if ((await stats.locator('[data-testid="token-histogram"]').count()) > 0) {
      await stats.locator('[data-testid="token-histogram"] canvas').first().waitFor()
    }
    await shot('dataset-stats', DESKTOP)
    await page.keyboard.press('Escape')
  })
  await step('datasets: a bad file lists its problems by line and field, and is not stored', async () => {
    await page.goto(`${BASE}/datasets`)
    await settle()
    await upload('bad.jsonl', `${good}\n${JSON.stringify(records[2])}\n{oops\n`)
    const problems = page.locator('[data-testid="dataset-problems"]')
    await problems.getByText('line 3').first().waitFor()
    await problems.getByText('line 4').first().waitFor()
    await shot('dataset-problems', DESKTOP)
    await page.locator('.el-dialog:visible .el-dialog__footer .el-button').first().click()
    const rows = await page.locator('[data-testid="datasets-table"]').getByText(`e2e dataset ${stamp} bad.jsonl`).count()
    assert(rows === 0, 'the refused file was listed')
  })
  await step('training configs: create one from a preset', async () => {
    await page.goto(`${BASE}/training-configs`)
    await settle()
    await page.locator('[data-testid="training-config-create"]').click()
    await page.locator('[data-testid="preset-balanced"]').click()
    await field('training-config-name').fill(`e2e config ${stamp}`)
    await page.locator('[data-testid="training-config-submit"]').click()
    await page.locator('.el-message--success').first().waitFor()
    await page.locator('[data-testid="training-configs-table"]').getByText(`e2e config ${stamp}`).waitFor()
  })
}

/** Picks an option of the open Element Plus select popper by its text. */
async function pickOption(text) {
  await page.locator('.el-select-dropdown__item:visible').filter({ hasText: text }).first().click()
}

async function modelFlow() {
  const providerId = `e2e-${Date.now()}`
  const providerName = `E2E ${providerId}`
  let models = []

  await step('add a provider with a masked key', async () => {
    await page.setViewportSize(DESKTOP)
    await page.goto(`${BASE}/providers`)
    await settle()
    await page.locator('[data-testid="provider-create"]').click()
    await field('provider-id').fill(providerId)
    await field('provider-name').fill(providerName)
    await page.locator('[data-testid="provider-kind"]').click()
    await pickOption(new RegExp(PROVIDER_KIND === 'openai' ? 'OpenAI' : PROVIDER_KIND, 'i'))
    await field('provider-url').fill(PROVIDER_URL)
    await field('provider-key').fill(PROVIDER_KEY)
    await page.locator('[data-testid="provider-submit"]').click()
    await page.locator('.el-message--success').first().waitFor()
    const row = page.locator('[data-testid="providers-table"] .el-table__row').filter({ hasText: providerId })
    await row.waitFor()
    const text = await row.innerText()
    assert(!text.includes(PROVIDER_KEY), 'the full API key is shown')
  })

  await step('test the connection and sync models', async () => {
    const row = page.locator('[data-testid="providers-table"] .el-table__row').filter({ hasText: providerId })
    await row.locator('[data-testid="provider-test"]').click()
    await row.locator('[data-testid="provider-test-result"]').waitFor()
    await row.locator('[data-testid="provider-sync"]').click()
    await row.locator('[data-testid="provider-sync-result"]').waitFor()
    await row.locator('[data-testid="provider-models"]').click()
    const table = page.locator('[data-testid="provider-models-table"]')
    await table.locator('.el-table__row').first().waitFor()
    models = await table.locator('.el-table__row td:nth-child(2)').allInnerTexts()
    models = models.map((m) => m.trim()).filter(Boolean)
    assert(models.length > 0, 'sync found no models')
    await shot('provider-models', DESKTOP)
    await page.keyboard.press('Escape')
  })

  const mainModel = WANT_MODEL || models.find((m) => m !== FAIL_MODEL) || models[0]
  const configFor = async (model, name) => {
    await page.goto(`${BASE}/model-configs`)
    await settle()
    await page.locator('[data-testid="config-create"]').click()
    await page.locator('[data-testid="config-provider"]').click()
    await pickOption(providerName)
    await page.locator('[data-testid="config-model"]').click()
    await pickOption(model)
    await page
      .locator('.el-dialog:visible .el-form-item')
      .filter({ hasText: /显示名称|Display name/ })
      .locator('input')
      .fill(name)
    await page.locator('[data-testid="config-submit"]').click()
    await page.locator('.el-message--success').first().waitFor()
    await page.locator('[data-testid="configs-table"]').getByText(name).first().waitFor()
  }
  const mainName = `${providerId}-main`
  const failName = `${providerId}-fail`
  const otherName = `${providerId}-other`

  await step('an out-of-range temperature is refused inline', async () => {
    await page.goto(`${BASE}/model-configs`)
    await settle()
    await page.locator('[data-testid="config-create"]').click()
    const num = page.locator('[data-testid="config-temperature"] input')
    await num.fill('5')
    await num.blur()
    const v = Number(await num.inputValue())
    assert(v <= 2, `temperature input accepted ${v}`)
    await page.keyboard.press('Escape')
  })

  await step(`create a model config for ${mainModel}`, () => configFor(mainModel, mainName))
  await step(`create a second config for the comparison`, () =>
    configFor(FAIL_MODEL || mainModel, FAIL_MODEL ? failName : otherName),
  )

  if (!serves('/api/chat/sessions') || !serves('/api/comparisons')) {
    log('  skip chat and comparison: the server does not offer /api/chat/sessions or /api/comparisons yet')
    return
  }

  await step('chat: the answer streams with reasoning and Markdown, model HTML stays inert', async () => {
    await page.goto(`${BASE}/playground`)
    await settle()
    await page.locator('[data-testid="model-picker"]').click()
    await pickOption(mainName)
    await field('chat-input').fill('Explain Fibonacci with a code block.')
    await page.locator('[data-testid="send"]').click()
    // The fake may finish within a millisecond, before the stop button is ever drawn: wait for the
    // answer and its finished badge, then for the input to be ready again.
    const answer = page.locator('[data-testid="msg-assistant"]').last()
    await answer.locator('[data-testid="metrics-badge"]').waitFor({ timeout: STEP_TIMEOUT * 2 })
    await page.locator('[data-testid="send"]').waitFor({ timeout: STEP_TIMEOUT * 2 })
    const md = answer.locator('.markdown')
    assert((await md.count()) > 0, 'no rendered answer')
    assert((await md.locator('script').count()) === 0, 'a <script> element made it into the answer')
    const pwned = await page.evaluate(() => window.__pwned === true)
    assert(!pwned, 'model output ran script')
    const hasReasoning = (await answer.locator('[data-testid="reasoning-panel"]').count()) > 0
    log(
      `       reasoning panel: ${hasReasoning ? 'filled' : 'none (the model sent no reasoning)'}; code blocks: ${await md.locator('.code-block').count()}`,
    )
    await shot('playground-answer', DESKTOP)
    await page.setViewportSize(PHONE)
    await shot('playground-answer', PHONE)
    await page.setViewportSize(DESKTOP)
  })

  await step('chat: stop mid-stream', async () => {
    await field('chat-input').fill('Please write a long and slow answer.')
    await page.locator('[data-testid="send"]').click()
    const answer = page.locator('[data-testid="msg-assistant"]').last()
    await answer.locator('[data-testid="reasoning-panel"], .markdown').first().waitFor()
    const stop = page.locator('[data-testid="stop"]')
    const stillStreaming = await stop.isVisible()
    if (stillStreaming) await stop.click()
    await page.locator('[data-testid="send"]').waitFor()
    const badge = await answer
      .locator('[data-testid="metrics-badge"]')
      .innerText()
      .catch(() => '')
    if (stillStreaming) assert(/已停止|Stopped/.test(badge), `answer not marked stopped: ${badge}`)
    else log('       the answer finished before stop could be pressed')
  })

  await step('chat: regenerate replaces the last answer', async () => {
    const before = await page.locator('[data-testid="msg-assistant"]').count()
    await page.locator('[data-testid="regenerate"]').click()
    await page.locator('[data-testid="send"]').waitFor({ timeout: STEP_TIMEOUT * 2 })
    await page.locator('[data-testid="msg-assistant"]').last().locator('[data-testid="metrics-badge"]').waitFor()
    assert(
      (await page.locator('[data-testid="msg-assistant"]').count()) === before,
      'regenerate added an answer instead of replacing it',
    )
  })

  await step('chat: edit-and-resend replaces the answer after the edited message', async () => {
    const users = page.locator('[data-testid="msg-user"]')
    const answersBefore = await page.locator('[data-testid="msg-assistant"]').count()
    await users.last().locator('[data-testid="edit"]').click()
    await page.locator('.edit-box textarea').fill('Edited: say hi.')
    await page.locator('[data-testid="edit-send"]').click()
    // The fake answers within a millisecond: the stop button may never be seen, so wait for the
    // edited message and the finished answer instead.
    await users.last().getByText('Edited: say hi.').waitFor()
    await page.locator('[data-testid="send"]').waitFor({ timeout: STEP_TIMEOUT * 2 })
    assert((await users.last().innerText()).includes('Edited: say hi.'), 'edited text not shown')
    assert((await page.locator('[data-testid="msg-assistant"]').count()) === answersBefore, 'answer count changed')
  })

  await step('chat: export the session as Markdown', async () => {
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      (async () => {
        await page.locator('[data-testid="export"]').click()
        await page.locator('.el-dropdown-menu__item:visible').filter({ hasText: 'Markdown' }).click()
      })(),
    ])
    const path = join(OUT, 'session-export.md')
    await download.saveAs(path)
    const { readFile } = await import('node:fs/promises')
    assert((await readFile(path, 'utf8')).length > 0, 'empty export')
  })

  await step('chat: rename, search and delete a session', async () => {
    const title = `e2e chat ${Date.now()}`
    const active = page.locator('[data-testid="session-item"].active')
    await active.hover()
    await active.getByRole('button', { name: /重命名|Rename/ }).click()
    await page.locator('.el-message-box:visible input').fill(title)
    await confirmBox()
    await active.getByText(title).waitFor()
    const search = page.locator('[data-testid="session-list"] input')
    await search.fill(title)
    await search.press('Enter')
    await settle()
    assert((await page.locator('[data-testid="session-item"]').count()) === 1, 'search did not narrow the list')
    await page
      .locator('[data-testid="session-item"]')
      .first()
      .getByRole('button', { name: /删除|Delete/ })
      .click()
    await confirmBox()
    await page.locator('[data-testid="session-item"]').filter({ hasText: title }).waitFor({ state: 'detached' })
    await search.fill('')
    await search.press('Enter')
  })

  await step(
    FAIL_MODEL ? 'compare two models, one failing while the other finishes' : 'compare two configs side by side',
    async () => {
      await page.goto(`${BASE}/comparison`)
      await settle()
      await page.locator('[data-testid="compare-models"]').click()
      await pickOption(mainName)
      await pickOption(FAIL_MODEL ? failName : otherName)
      await page.keyboard.press('Escape')
      await field('compare-input').fill('Say hello in three languages.')
      await page.locator('[data-testid="compare-run"]').click()
      await page.locator('[data-testid="compare-columns"]').waitFor()
      await page.locator('[data-testid="compare-run"]').waitFor({ timeout: STEP_TIMEOUT * 2 })
      const cols = page.locator('[data-testid="compare-column"]')
      assert((await cols.count()) === 2, `expected 2 columns, got ${await cols.count()}`)
      const errors = await page.locator('[data-testid="column-error"]').count()
      if (FAIL_MODEL) {
        assert(errors === 1, `expected exactly one failed column, got ${errors}`)
        const ok = cols.filter({ hasNot: page.locator('[data-testid="column-error"]') })
        assert((await ok.locator('.markdown').count()) === 1, 'the healthy column has no answer')
      } else {
        assert(errors === 0, `${errors} columns failed`)
      }
      await shot('comparison-result', DESKTOP)
      await page.setViewportSize(PHONE)
      await shot('comparison-result', PHONE)
      await page.setViewportSize(DESKTOP)
      await page.locator('[data-testid="compare-history"] .el-table__row').first().waitFor()
    },
  )

  await step('comparison: a test prompt fills the input, re-run from history streams again', async () => {
    await page.locator('[data-testid="compare-test-prompt"]').click()
    await pickOption(/e2e question/)
    const input = await field('compare-input').inputValue()
    assert(input.includes('prime'), `input was not filled from the test prompt: ${input}`)
    const rerun = page.waitForResponse((r) => r.url().includes('/rerun') && r.request().method() === 'POST')
    await page.locator('[data-testid="compare-history"] [data-testid="compare-rerun"]').first().click()
    // The stop button shows only while the answers stream, and the fake provider may be done
    // before the page is looked at: the re-run's request, and the columns it refills (they are
    // emptied when it starts), are checked instead.
    assert((await rerun).ok(), 'the re-run request failed')
    await page.locator('[data-testid="compare-run"]').waitFor({ timeout: STEP_TIMEOUT * 2 })
    const cols = page.locator('[data-testid="compare-column"]')
    assert((await cols.count()) === 2, 're-run did not show two columns')
    assert((await cols.locator('.markdown').count()) >= 1, 're-run streamed no answer')
  })
}

/**
 * The API as the admin, outside the browser (test setup): its own login, renewed when the
 * access token expired (the e2e server runs with short-lived tokens).
 */
let apiToken = null
async function api(method, path, body) {
  const login = async () => {
    const res = await fetch(`${BASE}/api/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
    })
    if (!res.ok) throw new Error(`API login: ${res.status}`)
    apiToken = (await res.json()).access_token
  }
  if (!apiToken) await login()
  const send = () =>
    fetch(`${BASE}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${apiToken}`,
        ...(body !== undefined && !(body instanceof FormData) ? { 'Content-Type': 'application/json' } : {}),
      },
      body: body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
    })
  let res = await send()
  if (res.status === 401) {
    await login()
    res = await send()
  }
  const text = await res.text()
  let json = null
  try {
    json = text ? JSON.parse(text) : null
  } catch {
    json = text
  }
  return { status: res.status, ok: res.ok, json }
}

/** The first ready, enabled base model of the registry, or null. */
async function readyBaseModel() {
  const res = await api('GET', '/api/models?model_type=base&page_size=100')
  assert(res.ok, `GET /api/models → ${res.status}`)
  return res.json.items.find((m) => m.status === 'ready' && m.is_available) ?? null
}

/** Sends one chat message on the playground and waits for a finished, error-free answer. */
async function chatOnce(text) {
  await field('chat-input').fill(text)
  await page.locator('[data-testid="send"]').click()
  const answer = page.locator('[data-testid="msg-assistant"]').last()
  await answer.locator('[data-testid="metrics-badge"]').waitFor({ timeout: STEP_TIMEOUT * 3 })
  const failed = await answer.locator('[data-testid="answer-error"]').count()
  assert(failed === 0, `the answer failed: ${await answer.innerText()}`)
  const content = (
    await answer
      .locator('[data-testid="answer"]')
      .innerText()
      .catch(() => '')
  ).trim()
  assert(content.length > 0, 'the answer is empty')
  return content
}

async function localModelsFlow() {
  let base = null
  await step('models: the page lists the reference model', async () => {
    base = await readyBaseModel()
    await page.setViewportSize(DESKTOP)
    await page.goto(`${BASE}/models`)
    await settle()
    if (!base) {
      log('       no ready base model registered (no reference model in the data folder): chat skipped')
      return
    }
    const row = page.locator('[data-testid="models-table"] .el-table__row').filter({ hasText: base.name })
    await row.waitFor()
    assert((await row.locator('[data-testid="model-status"]').innerText()).match(/就绪|Ready/), 'the model is not shown ready')
  })
  if (!base) return

  await step(
    'models: "Chat" opens the playground with the model and a local answer streams',
    async () => {
      const row = page.locator('[data-testid="models-table"] .el-table__row').filter({ hasText: base.name })
      await row.locator('[data-testid="model-chat"]').click()
      await page.waitForURL(/\/playground\?config=/)
      await settle()
      const picked = await page.locator('[data-testid="model-picker"]').innerText()
      assert(picked.includes(base.display_name || base.name), `the playground picked "${picked}"`)
      const answer = await chatOnce('Say hello in one short sentence.')
      log(`       local answer: ${answer.slice(0, 60).replace(/\s+/g, ' ')}`)
      await shot('playground-local', DESKTOP)
    },
    STEP_TIMEOUT * 6,
  )
}

/** A tiny alpaca dataset: eight short records train in a few seconds on the reference model. */
const TINY_DATASET = JSON.stringify(
  ['red', 'green', 'blue', 'yellow', 'black', 'white', 'orange', 'purple'].map((c, i) => ({
    instruction: `What colour is number ${i + 1}?`,
    input: '',
    output: `Colour number ${i + 1} is ${c}.`,
  })),
)

async function trainingFlow() {
  const stamp = Date.now()
  const taskName = `e2e task ${stamp}`
  let base = null
  let dataset = null
  let config = null

  const ready = await step('training: setup (a base model, a tiny dataset and a short config through the API)', async () => {
    base = await readyBaseModel()
    if (!base) return
    const form = new FormData()
    form.append('name', `e2e colours ${stamp}`)
    form.append('format', 'alpaca')
    form.append('file', new Blob([TINY_DATASET], { type: 'application/json' }), 'colours.json')
    const d = await api('POST', '/api/datasets', form)
    assert(d.ok, `dataset upload → ${d.status} ${JSON.stringify(d.json)}`)
    dataset = d.json
    const c = await api('POST', '/api/training-configs', {
      name: `e2e quick ${stamp}`,
      preset: 'quick_test',
      params: { epochs: 1, batch_size: 1, max_seq_length: 64, lora_r: 4, lora_alpha: 8 },
    })
    assert(c.ok, `training config → ${c.status} ${JSON.stringify(c.json)}`)
    config = c.json
  })
  if (!ready) return
  if (!base) {
    log('  skip training: no ready base model registered (no reference model in the data folder)')
    return
  }

  const created = await step('training: a task is created from the UI', async () => {
    await page.setViewportSize(DESKTOP)
    await page.goto(`${BASE}/training-tasks`)
    await settle()
    await page.locator('[data-testid="task-create"]').click()
    await field('task-name').fill(taskName)
    await page.locator('[data-testid="task-model"]').click()
    await pickOption(base.display_name || base.name)
    await page.locator('[data-testid="task-dataset"]').click()
    await pickOption(dataset.name)
    await page.locator('[data-testid="task-config"]').click()
    await pickOption(config.name)
    await page.locator('[data-testid="task-submit"]').click()
    await page.waitForURL(/\/training-tasks\/\d+$/)
  })
  if (!created) return

  await step(
    'training: the loss curve gets points live',
    async () => {
      const points = page.locator('[data-testid="chart-loss"] [data-testid="chart-points"]')
      await page.waitForFunction(
        () => Number(document.querySelector('[data-testid="chart-loss"] [data-testid="chart-points"]')?.textContent ?? 0) > 0,
        null,
        { timeout: TRAIN_TIMEOUT },
      )
      log(`       loss points so far: ${await points.innerText()}`)
      await shot('training-task-running', DESKTOP)
    },
    TRAIN_TIMEOUT + 5000,
  )

  const completed = await step(
    'training: the task completes with a report',
    async () => {
      await page.locator('[data-testid="detail-status"][data-status="completed"]').waitFor({ timeout: TRAIN_TIMEOUT })
      await page.locator('[data-testid="detail-report"]').waitFor()
      const n = Number(await page.locator('[data-testid="chart-loss"] [data-testid="chart-points"]').innerText())
      assert(n > 0, 'no loss points')
      const logText = await page.locator('[data-testid="task-log"]').innerText()
      assert(logText.trim().length > 0, 'the log panel is empty')
      await page.locator('[data-testid="detail-chat"]').waitFor()
      await shot('training-task-done', DESKTOP)
      await page.setViewportSize(PHONE)
      await shot('training-task-done', PHONE)
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
      assert(overflow <= 1, `the task page is ${overflow}px wider than the phone screen`)
      await page.setViewportSize(DESKTOP)
    },
    TRAIN_TIMEOUT + 5000,
  )
  if (!completed) return

  const taskUrl = page.url()
  await step(
    'training: "Chat with the result" answers with the adapter',
    async () => {
      await page.locator('[data-testid="detail-chat"]').click()
      await page.waitForURL(/\/playground\?config=/)
      await settle()
      const answer = await chatOnce('What colour is number 3?')
      log(`       fine-tuned answer: ${answer.slice(0, 60).replace(/\s+/g, ' ')}`)
    },
    STEP_TIMEOUT * 6,
  )

  await step('training: "Compare base vs fine-tuned" preselects both models', async () => {
    await page.goto(taskUrl)
    await page.locator('[data-testid="detail-compare"]').click()
    await page.waitForURL(/\/comparison\?configs=/)
    await settle()
    const tags = page.locator('[data-testid="compare-models"] .el-tag')
    await tags.nth(1).waitFor()
    assert((await tags.count()) === 2, `expected 2 models selected, got ${await tags.count()}`)
  })
}

main().catch((err) => {
  log(`e2e crashed: ${err?.stack ?? err}`)
  log('0 passed, 1 failed')
  process.exit(1)
})
