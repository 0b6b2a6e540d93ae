import { reactive, ref } from 'vue'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import { createUser, listUsers, resetUserPassword, updateUser } from '@/api/users'
import type { Role, User } from '@/api/types'
import { usePagedList } from '@/composables/usePagedList'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { useAuthStore } from '@/stores/auth'
import { t } from '@/locales'

export function useUsers() {
  const auth = useAuthStore()
  const list = usePagedList((q) => listUsers(q))

  // create
  const createOpen = ref(false)
  const creating = ref(false)
  const createForm = reactive({ email: '', password: '', nickname: '', role: 'user' as Role })
  const createErrors = useFieldErrors()

  function openCreate(): void {
    Object.assign(createForm, { email: '', password: '', nickname: '', role: 'user' })
    createErrors.clear()
    createOpen.value = true
  }

  async function submitCreate(): Promise<void> {
    createErrors.clear()
    creating.value = true
    try {
      await createUser({
        email: createForm.email.trim(),
        password: createForm.password,
        nickname: createForm.nickname.trim() || undefined,
        role: createForm.role,
      })
      ElMessage.success(t('users.created'))
      createOpen.value = false
      await list.load()
    } catch (err) {
      createErrors.report(err)
    } finally {
      creating.value = false
    }
  }

  // per-row actions
  const busyId = ref<number | null>(null)

  async function patchUser(user: User, body: { role?: Role; is_active?: boolean }, okMessage: string): Promise<void> {
    busyId.value = user.id
    try {
      await updateUser(user.id, body)
      ElMessage.success(okMessage)
    } catch (err) {
      // 409/422 e.g. "cannot remove the last active admin": the server's message says why.
      ElMessage.error(errorMessage(err))
    } finally {
      busyId.value = null
      await list.load()
    }
  }

  async function toggleActive(user: User): Promise<void> {
    const enabling = !user.is_active
    if (!enabling) {
      const ok = await ElMessageBox.confirm(t('users.confirmDisable', { email: user.email }), t('common.confirm'), {
        type: 'warning',
      }).catch(() => false)
      if (!ok) return
    }
    await patchUser(user, { is_active: enabling }, enabling ? t('users.enabled') : t('users.disabled'))
  }

  async function changeRole(user: User, role: Role): Promise<void> {
    if (role === user.role) return
    await patchUser(user, { role }, t('users.roleChanged'))
  }

  // reset password
  const resetOpen = ref(false)
  const resetting = ref(false)
  const resetTarget = ref<User | null>(null)
  const resetPassword = ref('')
  const resetErrors = useFieldErrors()

  function openReset(user: User): void {
    resetTarget.value = user
    resetPassword.value = ''
    resetErrors.clear()
    resetOpen.value = true
  }

  async function submitReset(): Promise<void> {
    if (!resetTarget.value) return
    resetErrors.clear()
    resetting.value = true
    try {
      await resetUserPassword(resetTarget.value.id, resetPassword.value)
      ElMessage.success(t('users.passwordReset'))
      resetOpen.value = false
    } catch (err) {
      resetErrors.report(err)
    } finally {
      resetting.value = false
    }
  }

  const isSelf = (u: User) => auth.user?.id === u.id

  return {
    ...list,
    createOpen,
    creating,
    createForm,
    createErrors: createErrors.fieldErrors,
    openCreate,
    submitCreate,
    busyId,
    toggleActive,
    changeRole,
    resetOpen,
    resetting,
    resetTarget,
    resetPassword,
    resetErrors: resetErrors.fieldErrors,
    openReset,
    submitReset,
    isSelf,
  }
}
