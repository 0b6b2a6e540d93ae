import { beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import type { AxiosAdapter, AxiosResponse, InternalAxiosRequestConfig } from 'axios'
import { AxiosError } from 'axios'
import { authClient, configureSession } from '@/api/session'
import { useAuthStore } from '@/stores/auth'
import { usePreferencesStore } from '@/stores/preferences'
import { i18n } from '@/locales'
import type { User } from '@/api/types'

const admin: User = {
  id: 1,
  email: 'root@example.com',
  nickname: 'Root',
  role: 'admin',
  is_admin: true,
  is_active: true,
  created_at: '',
  updated_at: null,
}
const plain: User = { ...admin, id: 2, email: 'u@example.com', nickname: null, role: 'user', is_admin: false }

function respond(config: InternalAxiosRequestConfig, status: number, data: unknown): AxiosResponse {
  return { data, status, statusText: String(status), headers: {}, config } as AxiosResponse
}

describe('auth store', () => {
  let calls: string[]
  let refreshStatus: number

  beforeEach(() => {
    setActivePinia(createPinia())
    calls = []
    refreshStatus = 200
    const auth = useAuthStore()
    configureSession({
      getAccessToken: () => auth.accessToken,
      onTokens: (a) => auth.setSession(a),
      onSessionLost: () => auth.clear(),
    })
    const adapter: AxiosAdapter = async (config) => {
      calls.push(config.url ?? '')
      await new Promise((r) => setTimeout(r, 2))
      if (config.url === '/api/auth/refresh') {
        return refreshStatus === 200
          ? respond(config, 200, { access_token: 'tok-r', token_type: 'Bearer', expires_in: 900, user: plain })
          : respond(config, refreshStatus, { error: { code: 'unauthorized', message: 'no cookie' } })
      }
      if (config.url === '/api/auth/login') {
        const body = JSON.parse(String(config.data)) as { password: string }
        return body.password === 'right'
          ? respond(config, 200, { access_token: 'tok-l', token_type: 'Bearer', expires_in: 900, user: admin })
          : respond(config, 401, { error: { code: 'invalid_credentials', message: 'wrong' } })
      }
      if (config.url === '/api/auth/logout') {
        if (refreshStatus === 500) throw new AxiosError('down', 'ERR_NETWORK', config)
        return respond(config, 204, '')
      }
      return respond(config, 404, {})
    }
    authClient.defaults.adapter = adapter
  })

  it('boot restores the session from the refresh cookie with a single call', async () => {
    const auth = useAuthStore()
    await Promise.all([auth.boot(), auth.boot(), auth.boot()])
    expect(calls).toEqual(['/api/auth/refresh'])
    expect(auth.isAuthenticated).toBe(true)
    expect(auth.accessToken).toBe('tok-r')
    expect(auth.isAdmin).toBe(false)
    await auth.boot()
    expect(calls).toHaveLength(1)
  })

  it('boot without a valid cookie leaves the user logged out', async () => {
    refreshStatus = 401
    const auth = useAuthStore()
    await auth.boot()
    expect(auth.booted).toBe(true)
    expect(auth.isAuthenticated).toBe(false)
    expect(auth.user).toBeNull()
  })

  it('login keeps the token in memory only and knows admins', async () => {
    const setItem = vi.spyOn(Storage.prototype, 'setItem')
    const auth = useAuthStore()
    await auth.login('root@example.com', 'right')
    expect(auth.accessToken).toBe('tok-l')
    expect(auth.isAdmin).toBe(true)
    expect(auth.displayName).toBe('Root')
    expect(setItem.mock.calls.some(([, v]) => String(v).includes('tok-l'))).toBe(false)
  })

  it('login with a wrong password throws an ApiError and stores nothing', async () => {
    const auth = useAuthStore()
    await expect(auth.login('root@example.com', 'wrong')).rejects.toMatchObject({ status: 401, code: 'invalid_credentials' })
    expect(auth.isAuthenticated).toBe(false)
  })

  it('logout clears the session even when the server cannot be reached', async () => {
    const auth = useAuthStore()
    await auth.login('root@example.com', 'right')
    refreshStatus = 500
    await expect(auth.logout()).rejects.toBeTruthy()
    expect(auth.isAuthenticated).toBe(false)
    expect(auth.accessToken).toBeNull()
  })
})

describe('preferences store', () => {
  beforeEach(() => {
    localStorage.clear()
    document.documentElement.classList.remove('dark')
    setActivePinia(createPinia())
  })

  it('defaults to zh-CN and light, and persists a theme toggle', async () => {
    const prefs = usePreferencesStore()
    expect(prefs.locale).toBe('zh-CN')
    expect(i18n.global.locale.value).toBe('zh-CN')
    prefs.toggleTheme()
    await Promise.resolve()
    expect(prefs.theme).toBe('dark')
    expect(document.documentElement.classList.contains('dark')).toBe(true)
    expect(localStorage.getItem('workbench.theme')).toBe('dark')
  })

  it('switches language and remembers it for the next visit', async () => {
    const prefs = usePreferencesStore()
    prefs.setLocale('en')
    await Promise.resolve()
    expect(i18n.global.locale.value).toBe('en')
    expect(i18n.global.t('menu.playground')).toBe('Playground')
    setActivePinia(createPinia())
    expect(usePreferencesStore().locale).toBe('en')
    usePreferencesStore().setLocale('zh-CN')
  })
})
