import { computed, ref } from 'vue'
import { defineStore } from 'pinia'
import * as authApi from '@/api/auth'
import { refreshOnce } from '@/api/session'
import type { TokenAnswer, User } from '@/api/types'

/**
 * The session: the access token lives only in memory (never localStorage), the refresh token
 * only in its HttpOnly cookie. A reload restores the session with one refresh call (`boot`).
 */
export const useAuthStore = defineStore('auth', () => {
  const accessToken = ref<string | null>(null)
  const user = ref<User | null>(null)
  const booted = ref(false)
  let bootPromise: Promise<void> | null = null

  const isAuthenticated = computed(() => accessToken.value !== null && user.value !== null)
  const isAdmin = computed(() => !!user.value && (user.value.role === 'admin' || user.value.is_admin))
  const displayName = computed(() => user.value?.nickname || user.value?.email || '')

  function setSession(answer: TokenAnswer): void {
    accessToken.value = answer.access_token
    user.value = answer.user
  }

  function clear(): void {
    accessToken.value = null
    user.value = null
  }

  /** Restores a session from the refresh cookie once per page load; no cookie just means logged out. */
  function boot(): Promise<void> {
    if (booted.value) return Promise.resolve()
    bootPromise ??= refreshOnce()
      .then(() => undefined)
      .catch(() => clear())
      .finally(() => {
        booted.value = true
      })
    return bootPromise
  }

  async function login(email: string, password: string): Promise<User> {
    const answer = await authApi.login(email, password)
    setSession(answer)
    booted.value = true
    return answer.user
  }

  async function logout(): Promise<void> {
    try {
      await authApi.logout()
    } finally {
      clear()
    }
  }

  return { accessToken, user, booted, isAuthenticated, isAdmin, displayName, setSession, clear, boot, login, logout }
})
