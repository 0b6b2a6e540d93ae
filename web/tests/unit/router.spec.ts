import { beforeEach, describe, expect, it } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { createMemoryHistory, createRouter } from 'vue-router'
import { defineComponent } from 'vue'
import { authGuard, safeRedirect } from '@/router'
import { useAuthStore } from '@/stores/auth'
import type { User } from '@/api/types'

const Dummy = defineComponent({ template: '<div />' })
const user: User = {
  id: 2,
  email: 'u@example.com',
  nickname: null,
  role: 'user',
  is_admin: false,
  is_active: true,
  created_at: '',
  updated_at: null,
}

function makeRouter() {
  const router = createRouter({
    history: createMemoryHistory(),
    routes: [
      { path: '/login', name: 'login', component: Dummy, meta: { public: true } },
      { path: '/forbidden', name: 'forbidden', component: Dummy },
      { path: '/playground', name: 'playground', component: Dummy },
      { path: '/admin/users', name: 'admin-users', component: Dummy, meta: { admin: true } },
    ],
  })
  router.beforeEach(authGuard)
  return router
}

describe('route guard', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    const auth = useAuthStore()
    auth.booted = true // no refresh call in these tests
  })

  it('sends a visitor to login with a way back', async () => {
    const router = makeRouter()
    await router.push('/playground?x=1')
    expect(router.currentRoute.value.name).toBe('login')
    expect(router.currentRoute.value.query.redirect).toBe('/playground?x=1')
  })

  it('keeps admin pages from plain users', async () => {
    useAuthStore().setSession({ access_token: 't', token_type: 'Bearer', expires_in: 900, user })
    const router = makeRouter()
    await router.push('/admin/users')
    expect(router.currentRoute.value.name).toBe('forbidden')
    await router.push('/playground')
    expect(router.currentRoute.value.name).toBe('playground')
  })

  it('lets admins in and sends a logged-in user away from login', async () => {
    useAuthStore().setSession({
      access_token: 't',
      token_type: 'Bearer',
      expires_in: 900,
      user: { ...user, role: 'admin', is_admin: true },
    })
    const router = makeRouter()
    await router.push('/admin/users')
    expect(router.currentRoute.value.name).toBe('admin-users')
    await router.push('/login?redirect=/playground')
    expect(router.currentRoute.value.path).toBe('/playground')
  })

  it('accepts only same-app redirects', () => {
    expect(safeRedirect('/playground')).toBe('/playground')
    expect(safeRedirect('//evil.example.com')).toBe('/')
    expect(safeRedirect('https://evil.example.com')).toBe('/')
    expect(safeRedirect('/login?redirect=/x')).toBe('/')
    expect(safeRedirect(undefined)).toBe('/')
  })
})
